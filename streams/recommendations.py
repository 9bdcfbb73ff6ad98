"""Recommendation queries over topics: a request on ``recs.requests`` -> a reply on ``recs.replies``.

Request (JSON object; only ``request_id`` and ``account_id`` are required)::

    {"request_id": "r-1", "account_id": 7, "k": 10, "exclude_used": true, "max_risk": 0.1}

* ``k``: how many merchants (1 .. ``recs_max_k``, default 10);
* ``exclude_used``: leave out merchants the account already pays (its state's merchant history);
  default false;
* ``max_risk``: drop merchants whose fraud risk is at or above this (0 < max_risk <= ``recs_max_risk``,
  default ``recs_max_risk``): a request may be stricter than the worker, never laxer.

Reply (JSON object, keyed by ``request_id``)::

    {"request_id": "r-1", "status": "ok", "account_id": 7, "model_version": "recs-...",
     "merchants": [{"merchant_id": 3, "score": 4.12, "risk": 0.0}, ...],
     "excluded": {"used": 5, "risk": 1}, "timings": {"total_ms": 1.9, "model_ms": 0.8, "batch": 3}}
    {"request_id": "r-1", "status": "not_found" | "model_unavailable", "error": "...", "merchants": []}
    {"request_id": null,  "status": "invalid_request", "error": "...", "merchants": []}

``merchants`` is best first; fewer than ``k`` only when the catalogue runs out after exclusions.
Every request gets exactly one reply, as for score queries (``streams/queries.py``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fraudgraph.connectors.events import EntityId
from fraudgraph.models.recommend import RiskParams, account_input, merchant_risk, rerank
from fraudgraph.streams.queries import MAX_ID_CHARS, InvalidRequest, _parse, entity_id
from fraudgraph.streams.state import StateReader, node_key

OK, NOT_FOUND, INVALID, NO_MODEL = "ok", "not_found", "invalid_request", "model_unavailable"
DEFAULT_K = 10


@dataclass(frozen=True)
class RecsRequest:
    request_id: str
    account_id: EntityId
    k: int
    exclude_used: bool
    max_risk: float


def parse_request(raw: bytes | None, max_k: int, max_risk: float) -> RecsRequest:
    """A valid request, or ``InvalidRequest`` (with ``.request_id`` when one could be read)."""
    request_id = None
    try:
        req = _parse(raw)
        request_id = req.get("request_id")
        if not isinstance(request_id, str) or not request_id or len(request_id) > MAX_ID_CHARS:
            request_id = None
            raise InvalidRequest(f"request_id must be a non-empty string of at most {MAX_ID_CHARS} characters")
        account = entity_id(req, "account_id")
        if account is None:
            raise InvalidRequest("account_id is required")
        k = req.get("k", DEFAULT_K)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= max_k:
            raise InvalidRequest(f"k must be an integer from 1 to {max_k}")
        exclude_used = req.get("exclude_used", False)
        if not isinstance(exclude_used, bool):
            raise InvalidRequest("exclude_used must be true or false")
        risk = req.get("max_risk", max_risk)
        if isinstance(risk, bool) or not isinstance(risk, (int, float)) or not 0 < risk <= max_risk:
            raise InvalidRequest(f"max_risk must be a number in (0, {max_risk}]")
        if unknown := set(req) - {"request_id", "account_id", "k", "exclude_used", "max_risk"}:
            raise InvalidRequest(f"unknown fields {sorted(unknown)}")
    except InvalidRequest as err:
        err.request_id = request_id  # type: ignore[attr-defined]
        raise
    return RecsRequest(request_id, account, k, exclude_used, float(risk))


def error_reply(request_id: str | None, status: str, error: str) -> dict[str, Any]:
    return {"request_id": request_id, "status": status, "error": error, "merchants": []}


async def answer_batch(
    raws: Sequence[bytes | None], nodes: StateReader, server: Any, max_k: int, risk: RiskParams = RiskParams()
) -> list[dict[str, Any]]:
    """One reply per raw request, in order. The accounts' embeddings come from their current state,
    one batched call of ``server`` (``RecsServer``) ranks the catalogue for all of them, and the
    candidates' fraud risk is read from the merchants' current state."""
    started = time.perf_counter()
    replies: list[dict[str, Any] | None] = [None] * len(raws)
    todo = []  # (position, request, account state)
    for n, raw in enumerate(raws):
        try:
            req = parse_request(raw, max_k, risk.max_risk)
        except InvalidRequest as err:
            replies[n] = error_reply(getattr(err, "request_id", None), INVALID, str(err))
            continue
        state = nodes.get(node_key("Account", req.account_id))
        if state is None or state.deleted:
            replies[n] = error_reply(req.request_id, NOT_FOUND, f"unknown account {req.account_id}")
            continue
        todo.append((n, req, state))
    if todo:
        if server.loaded is None:
            for n, req, _ in todo:
                replies[n] = error_reply(req.request_id, NO_MODEL, "no recommendation model is registered or loaded")
        else:
            await _rank(todo, replies, nodes, server, risk, started)
    return replies  # type: ignore[return-value]


async def _rank(todo, replies, nodes: StateReader, server: Any, risk: RiskParams, started: float) -> None:
    users = [account_input(state) for _, _, state in todo]
    used = [{int(m) for m in state.merchants} for _, _, state in todo]
    exclude = [u if req.exclude_used else set() for (_, req, _), u in zip(todo, used)]
    # Over-fetch so that risky merchants dropped after ranking still leave k; a request left short
    # is ranked again over the whole catalogue (rare: only when many top merchants are risky).
    want = [2 * req.k + 16 for _, req, _ in todo]
    model_started = time.perf_counter()
    try:
        loaded, cands = await server.candidates(users, exclude, max(want))
    except LookupError:  # unloaded between the check and the call
        for n, req, _ in todo:
            replies[n] = error_reply(req.request_id, NO_MODEL, "no recommendation model is loaded")
        return
    model_ms = (time.perf_counter() - model_started) * 1000
    risks: dict[Any, float] = {}

    def risk_of(merchant: Any) -> float:
        if merchant not in risks:
            risks[merchant] = merchant_risk(
                nodes.get(node_key("Merchant", merchant)), loaded.prior.get(merchant, 0.0), risk
            )
        return risks[merchant]

    for j, (n, req, _) in enumerate(todo):
        kept, dropped = rerank(cands[j], risk_of, req.k, req.max_risk)
        if len(kept) < req.k and len(cands[j]) >= max(want):
            _, again = await server.candidates([users[j]], [exclude[j]], len(loaded.items))
            kept, dropped = rerank(again[0], risk_of, req.k, req.max_risk)
        replies[n] = {
            "request_id": req.request_id,
            "status": OK,
            "account_id": req.account_id,
            "model_version": loaded.version,
            "merchants": [{"merchant_id": r.item, "score": round(r.score, 4), "risk": round(r.risk, 4)} for r in kept],
            "excluded": {"used": len(exclude[j] & set(loaded.index)), "risk": dropped},
            "timings": {
                "total_ms": round((time.perf_counter() - started) * 1000, 3),
                "model_ms": round(model_ms, 3),
                "batch": len(todo),
            },
        }
