"""Score queries over topics: a request on ``fraud.score-requests`` -> a reply on ``fraud.score-replies``.

Request (JSON object)::

    {"request_id": "r-1", "transaction_id": 42}     the score of one transaction
    {"request_id": "r-2", "account_id": 7}          the latest scores of an account's transactions (newest first)

Reply (JSON object, keyed by ``request_id``)::

    {"request_id": "r-1", "status": "ok", "scores": [<TransactionScored>, ...]}
    {"request_id": "r-1", "status": "not_found", "error": "...", "scores": []}
    {"request_id": null,  "status": "invalid_request", "error": "...", "scores": []}

Every request gets exactly one reply, whatever it holds; a request that cannot even be parsed is
answered with ``request_id`` null (and the request's Kafka key, if any, as the reply key) so the
asker can still correlate it by key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from fraudgraph.connectors.events import EntityId

MAX_REQUEST_BYTES = 64 * 1024
MAX_ID_CHARS = 200


class InvalidRequest(ValueError):
    pass


def _parse(raw: bytes | None) -> dict[str, Any]:
    if raw is None:
        raise InvalidRequest("empty request")
    if len(raw) > MAX_REQUEST_BYTES:
        raise InvalidRequest(f"request larger than {MAX_REQUEST_BYTES} bytes")
    try:
        req = orjson.loads(raw)
    except orjson.JSONDecodeError as err:
        raise InvalidRequest(f"not JSON: {err}") from None
    if not isinstance(req, dict):
        raise InvalidRequest("a request is a JSON object")
    return req


def _id(req: dict[str, Any], name: str) -> int | None:
    value = req.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest(f"{name} must be a non-negative integer")
    return value


def entity_id(req: dict[str, Any], name: str) -> EntityId | None:
    """An account (or other entity) id: an integer, or the text key of a bank whose mapping keys
    that entity by text (``[source] text_keys``, composite keys)."""
    value = req.get(name)
    if isinstance(value, str):
        if not value or len(value) > MAX_ID_CHARS:
            raise InvalidRequest(f"{name} as text must have 1 to {MAX_ID_CHARS} characters")
        return value
    return _id(req, name)


def answer(
    raw: bytes | None, score_of: Callable[[int], dict | None], recent_of: Callable[[EntityId], list[int] | None]
) -> dict[str, Any]:
    """The reply to one raw request; ``score_of(tx)`` gives a stored TransactionScored dict,
    ``recent_of(account)`` an account's recent transaction ids (None for an unknown account)."""
    request_id = None
    try:
        req = _parse(raw)
        request_id = req.get("request_id")
        if not isinstance(request_id, str) or not request_id or len(request_id) > MAX_ID_CHARS:
            request_id = None
            raise InvalidRequest(f"request_id must be a non-empty string of at most {MAX_ID_CHARS} characters")
        tx, account = _id(req, "transaction_id"), entity_id(req, "account_id")
        if (tx is None) == (account is None):
            raise InvalidRequest("give exactly one of transaction_id or account_id")
    except InvalidRequest as err:
        return {"request_id": request_id, "status": "invalid_request", "error": str(err), "scores": []}

    if tx is not None:
        score = score_of(tx)
        if score is None:
            return {
                "request_id": request_id,
                "status": "not_found",
                "error": f"no score for transaction {tx}",
                "scores": [],
            }
        return {"request_id": request_id, "status": "ok", "scores": [score]}
    assert account is not None  # exactly one of the two ids is given (checked above)
    recent = recent_of(account)
    # Newest first by source LSN: the recent list is in arrival order, which interleaves partitions.
    scores = sorted(
        (s for s in map(score_of, recent or []) if s is not None),
        key=lambda s: s.get("source", {}).get("lsn", 0),
        reverse=True,
    )
    if not scores:
        return {
            "request_id": request_id,
            "status": "not_found",
            "error": f"no scored transactions for account {account}",
            "scores": [],
        }
    return {"request_id": request_id, "status": "ok", "scores": scores}
