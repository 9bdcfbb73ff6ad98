"""Score queries: every request gets one reply, with a clear status."""

import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fraudgraph.streams.queries import answer

SCORES = {
    1: {"transaction_id": 1, "score": 0.1, "source": {"lsn": 10}},
    2: {"transaction_id": 2, "score": 0.9, "source": {"lsn": 20}},
}
RECENT = {7: [1, 2, 3], "0042/1234": [1]}  # 3 is not scored (yet); a text (composite) account key


def ask(request):
    raw = request if isinstance(request, (bytes, type(None))) else json.dumps(request).encode()
    return answer(raw, SCORES.get, RECENT.get)


def test_by_transaction_and_by_account():
    assert ask({"request_id": "a", "transaction_id": 2}) == {"request_id": "a", "status": "ok", "scores": [SCORES[2]]}
    reply = ask({"request_id": "b", "account_id": 7})
    assert reply["status"] == "ok" and [s["transaction_id"] for s in reply["scores"]] == [2, 1]  # newest first


def test_an_account_keyed_by_text_is_asked_by_its_text_key():
    reply = ask({"request_id": "c", "account_id": "0042/1234"})
    assert reply["status"] == "ok" and [s["transaction_id"] for s in reply["scores"]] == [1]
    assert "1 to 200 characters" in ask({"request_id": "c", "account_id": ""})["error"]


def test_not_found():
    assert ask({"request_id": "a", "transaction_id": 3})["status"] == "not_found"
    assert ask({"request_id": "a", "account_id": 8})["status"] == "not_found"


@pytest.mark.parametrize(
    "request_, why",
    [
        (None, "empty"),
        (b"{nope", "not JSON"),
        ([1], "JSON object"),
        ({"transaction_id": 1}, "request_id"),
        ({"request_id": "a"}, "exactly one"),
        ({"request_id": "a", "transaction_id": 1, "account_id": 7}, "exactly one"),
        ({"request_id": "a", "transaction_id": "1"}, "integer"),
        ({"request_id": "a", "transaction_id": True}, "integer"),
        ({"request_id": "x" * 1000, "transaction_id": 1}, "request_id"),
        (b" " * 70_000, "larger"),
    ],
)
def test_invalid_requests_get_a_reason(request_, why):
    reply = ask(request_)
    assert reply["status"] == "invalid_request" and why in reply["error"] and reply["scores"] == []


@given(
    st.one_of(
        st.binary(max_size=300),
        st.dictionaries(
            st.text(max_size=20),
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
                lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                max_leaves=8,
            ),
            max_size=5,
        ),
    )
)
def test_any_input_gets_exactly_one_wellformed_reply(request_):
    reply = ask(request_)
    assert reply["status"] in {"ok", "not_found", "invalid_request"}
    orjson.dumps(reply)
