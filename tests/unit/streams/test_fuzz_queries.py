"""Hostile score and recommendation queries: whatever a request holds, it gets exactly one well-formed
reply (never an exception), which serialises to JSON and can be keyed, and echoes the asker's ``request_id``
whenever the request carried a valid one."""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from fraudgraph.models.recommend import RiskParams
from fraudgraph.streams.queries import MAX_ID_CHARS, MAX_REQUEST_BYTES, answer
from fraudgraph.streams.recommendations import answer_batch

from support.hostile import JSON_VALUES, dumps, recs_requests, requests

SCORES = {
    1: {"transaction_id": 1, "score": 0.1, "source": {"lsn": 10}},
    2**63 - 1: {"transaction_id": 2**63 - 1, "score": 0.9, "source": {"lsn": 20}},
}
RECENT = {7: [1, 2**63 - 1, 3], 8: []}
FUZZ = settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def check_reply(raw: bytes | None) -> dict:
    reply = answer(raw, SCORES.get, RECENT.get)
    assert set(reply) in ({"request_id", "status", "scores"}, {"request_id", "status", "error", "scores"})
    assert reply["status"] in {"ok", "not_found", "invalid_request"}
    assert ("error" in reply) == (reply["status"] != "ok")
    assert isinstance(reply["scores"], list) and (reply["status"] == "ok") == bool(reply["scores"])
    rid = reply["request_id"]
    assert rid is None or (isinstance(rid, str) and 0 < len(rid) <= MAX_ID_CHARS)
    if rid is not None:
        rid.encode()  # the worker keys the reply by it
    assert orjson.loads(orjson.dumps(reply)) == reply
    if reply.get("error"):
        assert len(reply["error"]) < 500  # a readable reason, not an echo of a huge request
    if currently_in_test_context():
        event(reply["status"])
    return reply


@pytest.mark.slow  # several seconds: runs in `make test`
@FUZZ
@given(requests())
def test_mutated_requests_get_one_wellformed_reply(raw):
    reply = check_reply(raw)
    sent = None
    try:  # what the service can parse (its depth and size limits; beyond them only the Kafka key correlates)
        sent = orjson.loads(raw) if len(raw) <= MAX_REQUEST_BYTES else None
    except orjson.JSONDecodeError:
        pass
    if (
        isinstance(sent, dict)
        and isinstance(sent.get("request_id"), str)
        and 0 < len(sent["request_id"]) <= MAX_ID_CHARS
    ):
        assert reply["request_id"] == sent["request_id"]  # the asker can always correlate its reply


@FUZZ
@given(st.none() | st.binary(max_size=2048) | JSON_VALUES.map(dumps))
def test_random_input_gets_one_wellformed_reply(raw):
    check_reply(raw)


def test_huge_and_deep_requests_are_refused_with_a_reason():
    huge = json.dumps({"request_id": "r", "transaction_id": 1, "pad": "x" * MAX_REQUEST_BYTES}).encode()
    assert "larger" in check_reply(huge)["error"]
    deep = b'{"request_id":"r","transaction_id":' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert check_reply(deep)["status"] == "invalid_request"


def test_ids_at_the_int64_edge():
    assert check_reply(json.dumps({"request_id": "r", "transaction_id": 2**63 - 1}).encode())["status"] == "ok"
    assert check_reply(json.dumps({"request_id": "r", "transaction_id": 2**64 - 1}).encode())["status"] == "not_found"
    assert check_reply(json.dumps({"request_id": "r", "transaction_id": 2**64}).encode())["status"] == "invalid_request"


# ---- recommendation requests (streams/recommendations.py) ----


class NoAccounts:
    def get(self, key):
        return None


class NoModel:
    loaded = None


def check_recs_replies(raws: list[bytes | None]) -> list[dict]:
    replies = asyncio.run(answer_batch(raws, NoAccounts(), NoModel(), max_k=100, risk=RiskParams(max_risk=0.2)))
    assert len(replies) == len(raws)  # exactly one each, in order
    for raw, reply in zip(raws, replies):
        assert set(reply) == {"request_id", "status", "error", "merchants"} and reply["merchants"] == []
        assert reply["status"] in {"not_found", "invalid_request"}  # no account is known, no model is loaded
        assert orjson.loads(orjson.dumps(reply)) == reply and len(reply["error"]) < 500
        rid = reply["request_id"]
        assert rid is None or (isinstance(rid, str) and 0 < len(rid) <= MAX_ID_CHARS)
        try:
            sent = orjson.loads(raw) if raw is not None and len(raw) <= MAX_REQUEST_BYTES else None
        except orjson.JSONDecodeError:
            sent = None
        if (
            isinstance(sent, dict)
            and isinstance(sent.get("request_id"), str)
            and 0 < len(sent["request_id"]) <= MAX_ID_CHARS
        ):
            assert rid == sent["request_id"]
        if currently_in_test_context():
            event(reply["status"])
    return replies


@pytest.mark.slow  # several seconds: runs in `make test`
@FUZZ
@given(st.lists(recs_requests() | st.none() | st.binary(max_size=300), min_size=1, max_size=8))
def test_recommendation_requests_get_one_wellformed_reply_each(raws):
    check_recs_replies(raws)


def test_a_valid_recommendation_request_for_an_unknown_account_is_not_found():
    raw = json.dumps({"request_id": "x'}) DETACH DELETE n //", "account_id": 7, "k": 5}).encode()
    assert check_recs_replies([raw])[0]["status"] == "not_found"
