"""Hostile CDC input: whatever bytes arrive, ``decode`` returns a domain event that is safe to apply
downstream, or raises ``DecodeError`` with a reason from the fixed set; never another exception.

The inputs are random bytes, random JSON, and real Debezium envelopes (tests/fixtures) mutated at
any path, the schema included: wrong types, missing fields, huge strings and numbers, deep nesting,
unicode (NUL, astral, bidi), non-finite and huge numbers as raw JSON tokens, truncation and byte
flips. "Safe downstream" is what the state, scoring and Neo4j stages rely on: integers fit a signed
64-bit (Neo4j's and PostgreSQL's BIGINT; the Bolt driver refuses larger ones), strings are bounded,
timestamps convert to UTC, amounts are finite and plausible.
"""

from __future__ import annotations

import json
import tracemalloc
from dataclasses import fields
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, given, settings
from hypothesis import strategies as st

from fraudgraph.connectors.decoder import MAX_MESSAGE_BYTES, MAX_STRING_CHARS, REASONS, DecodeError, Tombstone, decode
from fraudgraph.connectors.events import DomainEvent, EntityDeleted
from fraudgraph.connectors.mapping import load_mapping

from support.hostile import FIXTURES, JSON_VALUES, RawToken, damaged_bytes, deep_text, dumps, mutated_envelopes

MAPPING = load_mapping()
INT64 = (-(2**63), 2**63 - 1)
FUZZ = settings(
    max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


def assert_safe_event(event) -> None:
    """What every stage after the decoder may assume of a decoded event."""
    if isinstance(event, Tombstone):
        return
    assert isinstance(event, DomainEvent)
    pos = event.position
    for n in (pos.lsn, pos.ts_ms) + ((pos.tx_id,) if pos.tx_id is not None else ()):
        assert type(n) is int and INT64[0] <= n <= INT64[1], n
    assert pos.lsn >= 0
    for f in fields(event):
        value = getattr(event, f.name)
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            assert INT64[0] <= value <= INT64[1], (f.name, value)
        elif isinstance(value, str):
            assert len(value) <= MAX_STRING_CHARS, f.name
            value.encode("utf-8")  # no lone surrogates: Kafka, Neo4j and JSON replies all need UTF-8
        elif isinstance(value, Decimal):
            assert value.is_finite() and 0 <= value < Decimal("1e16"), (f.name, value)
        elif isinstance(value, datetime):
            assert value.tzinfo is not None
            value.astimezone(UTC)  # raises OverflowError where an offset leaves datetime's range
        elif f.name != "position":
            raise AssertionError(f"unexpected field type {f.name}: {type(value)}")
    if isinstance(event, EntityDeleted):
        assert isinstance(event.key, str) and 0 < len(event.key) <= MAX_STRING_CHARS


def decodes_or_rejects(topic: str, value: bytes | None, mode: str = "precise", key: bytes | None = None) -> str:
    """'event' or the rejection reason; fails the test on any other exception or an unsafe event."""
    try:
        decoded = decode(topic, value, MAPPING, mode, key)
    except DecodeError as err:
        assert err.reason in REASONS, err.reason
        assert err.detail and len(str(err)) < 2000  # a bounded, readable detail for the dead-letter header
        outcome = err.reason
    else:
        assert_safe_event(decoded)
        outcome = "event"
    if currently_in_test_context():
        event(outcome)  # --hypothesis-show-statistics: how often each outcome was reached
    return outcome


TOPICS = st.sampled_from([f"bank.public.{t}" for t in MAPPING.tables] + ["bank.public.payroll", "x", ""])
MODES = st.sampled_from(["precise", "double", "string", "bogus"])


# ---- properties ----


@FUZZ
@given(TOPICS, st.binary(max_size=4096), MODES)
def test_random_bytes(topic, value, mode):
    decodes_or_rejects(topic, value, mode)


@FUZZ
@given(TOPICS, JSON_VALUES, MODES, st.none() | st.binary(max_size=64))
def test_random_json(topic, doc, mode, key):
    decodes_or_rejects(topic, dumps(doc), mode, key)


@pytest.mark.slow  # several seconds: runs in `make test`
@FUZZ
@given(mutated_envelopes())
def test_mutated_real_envelopes(case):
    topic, value, mode, key = case
    decodes_or_rejects(topic, value, mode, key)


@FUZZ
@given(damaged_bytes())
def test_damaged_real_envelopes(case):
    topic, value, mode, key = case
    decodes_or_rejects(topic, value, mode, key)


# ---- targeted cases the fuzzer found or that bound memory ----


def _fixture(stem: str, variant: str = "precise-schema") -> dict:
    return json.loads((FIXTURES / variant / f"{stem}.json").read_text())


def _with_column_schema(change) -> bytes:
    """The precise-schema transaction with ``change(column_schema)`` applied to every column schema."""
    doc = json.loads(_fixture("transactions.c")["value"])
    for part in doc["schema"]["fields"]:
        for column in part.get("fields", []):
            change(column)
    return orjson.dumps(doc)


@pytest.mark.parametrize(
    "change",
    [
        lambda c: c.update(field=[c["field"]]),  # an unhashable column name crashed the column lookup (TypeError)
        lambda c: c.update(field={"x": 1}),
        lambda c: c.update(name=["io.debezium.time.Timestamp"]),  # unhashable logical type name
        lambda c: c.update(name={"n": 1}),
    ],
)
def test_malformed_schema_is_a_reason_not_a_crash(change):
    reason = decodes_or_rejects("bank.public.transactions", _with_column_schema(change))
    assert reason in ("event", *REASONS)


def _tx(**source_or_after) -> bytes:
    doc = json.loads(_fixture("transactions.c", "string-schemaless")["value"])
    for k, v in source_or_after.items():
        (doc["source"] if k in ("lsn", "ts_ms", "txId") else doc["after"])[k] = v
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"lsn": 2**63}, "absurd_value"),  # orjson reads up to 2**64-1; Neo4j and the Bolt driver stop at 2**63-1
        ({"lsn": 2**64 - 1}, "absurd_value"),
        ({"ts_ms": 2**63}, "absurd_value"),
        ({"ts_ms": -(2**63) - 1}, "missing_field"),  # below int64 orjson reads a float: not an integer timestamp
        ({"account_id": 2**63}, "bad_value"),
        ({"merchant_id": 2**64 - 1}, "bad_value"),
        ({"txId": 2**63}, "event"),  # informational only: dropped (None) rather than rejected
        ({"created_at": "0001-01-01T00:00:00+14:00"}, "absurd_value"),  # before year 1 in UTC
        ({"created_at": "9999-12-31T23:59:59-14:00"}, "absurd_value"),  # after year 9999 in UTC
    ],
)
def test_values_downstream_cannot_hold_are_rejected(change, reason):
    assert decodes_or_rejects("bank.public.transactions", _tx(**change), "string") == reason


@pytest.mark.parametrize("key", [{"a": [1, {"b": 2}]}, [1, 2], True, 1.5, "", "k" * (MAX_STRING_CHARS + 1), 2**63])
def test_delete_with_a_non_scalar_or_absurd_key_is_rejected(key):
    doc = json.loads(_fixture("transactions.d")["value"])
    doc["payload"]["before"]["id"] = key
    assert decodes_or_rejects("bank.public.transactions", json.dumps(doc).encode()) == "bad_value"


def test_delete_keys_that_are_fine():
    doc = json.loads(_fixture("transactions.d")["value"])
    for key, expected in ((42, "42"), ("dev-\x00-'})//", "dev-\x00-'})//")):
        doc["payload"]["before"]["id"] = key
        assert decode("bank.public.transactions", json.dumps(doc).encode(), MAPPING).key == expected


@pytest.mark.parametrize(
    "value, reason",
    [
        (b"[" * 200_000 + b"]" * 200_000, "not_json"),  # orjson stops at depth 1024: no recursion, no stack overflow
        (b'{"a":' * 100_000 + b"1" + b"}" * 100_000, "not_json"),
        (b"[" * 1000 + b"]" * 1000, "not_an_envelope"),  # deep but within the parser's limit
        (b" " * (MAX_MESSAGE_BYTES + 1), "too_large"),
        (b'"' + b"x" * (MAX_MESSAGE_BYTES + 1) + b'"', "too_large"),
    ],
)
def test_deep_or_huge_input_is_rejected_with_a_reason(value, reason):
    assert decodes_or_rejects("bank.public.transactions", value) == reason


def _deep_table_envelope(depth: int) -> bytes:
    doc = json.loads(_fixture("transactions.c", "string-schemaless")["value"])
    doc["source"]["table"] = RawToken(deep_text(depth))
    return dumps(doc)


def test_deeply_nested_field_values_are_rejected_without_recursion_errors():
    assert decodes_or_rejects("bank.public.transactions", _deep_table_envelope(1000)) == "unknown_table"


@pytest.mark.parametrize(
    "make",
    [
        lambda n: b"[" + b"[]," * (n // 3 - 1) + b"[]]",  # as many empty containers as fit
        lambda n: b"{" + b",".join(b'"%d":{}' % i for i in range(n // 12)) + b"}",
        lambda n: (
            b'{"payload":{"op":"c","source":{"lsn":1,"ts_ms":1,"table":"transactions"},"after":{"ip":"'
            + b"\\u0000" * (n // 6 - 40)
            + b'"}}}'
        ),
    ],
)
def test_memory_for_one_message_is_bounded(make):
    """A message at the size limit costs at most a bounded multiple of its size: the worker's memory
    cannot be exhausted by one message (and the consumer holds a bounded number at a time)."""
    value = make(MAX_MESSAGE_BYTES - 100)
    assert len(value) <= MAX_MESSAGE_BYTES
    tracemalloc.start()
    try:
        decodes_or_rejects("bank.public.transactions", value, "string")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * MAX_MESSAGE_BYTES, f"{peak / 2**20:.0f} MiB for a 1 MiB message"
