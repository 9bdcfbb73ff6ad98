"""Decoder tests on change events captured from the real Debezium connector (tests/fixtures)."""

import base64
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fraudgraph.connectors.decoder import REASONS, DecodeError, Tombstone, _split_envelope, decode
from fraudgraph.connectors.events import (
    AccountUpserted,
    CustomerUpserted,
    DeviceUpserted,
    EntityDeleted,
    FraudReported,
    LoginRecorded,
    MerchantUpserted,
    ProfileChanged,
    TableTruncated,
    TransactionCreated,
    TransactionUpdated,
)
from fraudgraph.connectors.mapping import load_mapping, parse_mapping

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "debezium"
VARIANTS = sorted(p.name for p in FIXTURES.iterdir())
MAPPING = load_mapping()
EXPECTED_CREATE = {
    "customers": CustomerUpserted,
    "accounts": AccountUpserted,
    "merchants": MerchantUpserted,
    "devices": DeviceUpserted,
    "logins": LoginRecorded,
    "profile_changes": ProfileChanged,
    "transactions": TransactionCreated,
    "fraud_reports": FraudReported,
}


def fixture(variant: str, stem: str) -> dict:
    return json.loads((FIXTURES / variant / f"{stem}.json").read_text())


def run(fx: dict):
    value = fx["value"].encode() if fx["value"] is not None else None
    key = fx["key"].encode() if fx["key"] is not None else None
    return decode(fx["topic"], value, MAPPING, fx["connector_config"]["decimal.handling.mode"], key)


def test_fixtures_cover_every_variant_and_op():
    assert VARIANTS == ["double-schema", "precise-schema", "precise-schemaless", "string-schemaless"]
    for variant in VARIANTS:
        stems = {p.stem for p in (FIXTURES / variant).glob("*.json")}
        for table in EXPECTED_CREATE:
            assert {f"{table}.c", f"{table}.r"} <= stems
        assert {"transactions.u", "transactions.d", "transactions.tombstone", "customers.u", "accounts.u"} <= stems


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("table", sorted(EXPECTED_CREATE))
@pytest.mark.parametrize("op", ["c", "r"])
def test_creates_and_snapshot_reads_decode_to_the_table_event(variant, table, op):
    event = run(fixture(variant, f"{table}.{op}"))
    assert type(event) is EXPECTED_CREATE[table]
    assert event.position.snapshot is (op == "r")
    assert event.position.version > 0 and event.position.ts_ms > 1_700_000_000_000


@pytest.mark.parametrize("variant", VARIANTS)
def test_transaction_lifecycle(variant):
    created = run(fixture(variant, "transactions.c"))
    updated = run(fixture(variant, "transactions.u"))
    deleted = run(fixture(variant, "transactions.d"))
    tomb = run(fixture(variant, "transactions.tombstone"))
    assert (
        isinstance(updated, TransactionUpdated) and updated.previous_status == "pending" and updated.status == "settled"
    )
    assert updated.amount == Decimal("0.01")
    assert deleted == EntityDeleted(deleted.position, "transaction", str(created.transaction_id))
    assert isinstance(tomb, Tombstone)
    assert created.position.version < updated.position.version < deleted.position.version
    assert created.created_at == datetime(
        created.created_at.year,
        created.created_at.month,
        created.created_at.day,
        created.created_at.hour,
        created.created_at.minute,
        created.created_at.second,
        123456,
        tzinfo=UTC,
    )
    # NUMERIC(18,2) max-precision amount: exact except where the connector itself sends a double.
    expected = Decimal("1234567890123456.8") if variant.startswith("double") else Decimal("1234567890123456.78")
    assert created.amount == expected


@pytest.mark.parametrize("variant", VARIANTS)
def test_unicode_and_quotes_survive(variant):
    assert run(fixture(variant, "merchants.c")).name == 'Café ☕ "Quote"'
    assert run(fixture(variant, "customers.c")).full_name == "Zoë O'Brien"
    assert run(fixture(variant, "logins.c")).ip == "2001:db8::1"


def test_customer_update_to_null_phone():
    event = run(fixture("precise-schema", "customers.u"))
    assert isinstance(event, CustomerUpserted) and event.phone is None and event.email == "new@example.com"


def test_truncate_becomes_a_table_event():
    event = run(fixture("precise-schema", "fraud_reports.t"))
    assert event == TableTruncated(event.position, "fraud_report")


def test_delete_with_default_replica_identity_takes_the_key_from_the_record_key():
    fx = fixture("precise-schemaless", "transactions.d")
    value = json.loads(fx["value"])
    value["before"] = None
    event = decode(fx["topic"], json.dumps(value).encode(), MAPPING, key=fx["key"].encode())
    assert event.key == str(json.loads(fx["key"])["id"])


def tx_after(**changes) -> bytes:
    value = json.loads(fixture("string-schemaless", "transactions.c")["value"])
    value["after"].update(changes)
    return json.dumps(value).encode()


@pytest.mark.parametrize(
    "value, reason",
    [
        (b"\x00\xff garbage", "not_json"),
        (b'{"op": "c", "after": {', "not_json"),
        (b"[1, 2, 3]", "not_an_envelope"),
        (b'{"hello": "world"}', "not_an_envelope"),
        (tx_after(amount="-5.00"), "absurd_value"),
        (tx_after(amount="NaN"), "absurd_value"),
        (tx_after(amount="Infinity"), "absurd_value"),
        (tx_after(amount="1e40"), "absurd_value"),
        (tx_after(amount="twelve"), "bad_value"),
        (tx_after(account_id="12"), "bad_value"),
        (tx_after(account_id=True), "bad_value"),
        (tx_after(account_id=None), "missing_field"),
        (tx_after(created_at="yesterday"), "bad_value"),
        (tx_after(ip="x" * 10_000), "bad_value"),
        (b" " * (2 << 20), "too_large"),
    ],
)
def test_bad_input_is_rejected_with_a_reason(value, reason):
    with pytest.raises(DecodeError) as err:
        decode("bank.public.transactions", value, MAPPING, "string")
    assert err.value.reason == reason


def test_unknown_table_and_op():
    value = json.loads(fixture("string-schemaless", "transactions.c")["value"])
    value["source"]["table"] = "payroll"
    with pytest.raises(DecodeError) as err:
        decode("bank.public.payroll", json.dumps(value).encode(), MAPPING)
    assert err.value.reason == "unknown_table"
    value["source"]["table"], value["op"] = "transactions", "x"
    with pytest.raises(DecodeError) as err:
        decode("bank.public.transactions", json.dumps(value).encode(), MAPPING)
    assert err.value.reason == "unsupported_op"


def test_injection_like_strings_are_kept_verbatim():
    hostile = "'; DROP TABLE transactions; --\"}) MATCH (n) DETACH DELETE n //"
    event = decode("bank.public.transactions", tx_after(ip=hostile), MAPPING, "string")
    assert event.ip == hostile


def test_precise_decimal_roundtrip_with_negative_scale_bytes():
    raw = base64.b64encode((123456).to_bytes(3, "big", signed=True)).decode()
    event = decode("bank.public.transactions", tx_after(amount=raw), MAPPING, "precise")
    assert event.amount == Decimal("1234.56")


def test_mapping_rejects_a_field_the_event_does_not_have():
    with pytest.raises(ValueError, match="amount_cents"):
        parse_mapping(
            {
                "tables": {
                    "payments": {
                        "entity": "transaction",
                        "key": "id",
                        "create": "FraudReported",
                        "update": "FraudReported",
                        "fields": {
                            "report_id": "id",
                            "transaction_id": "tx",
                            "kind": "k",
                            "reported_at": "at",
                            "amount_cents": "c",
                        },
                    }
                }
            }
        )


def test_another_schema_maps_onto_the_same_events():
    mapping = parse_mapping(
        {
            "tables": {
                "chargebacks": {
                    "entity": "fraud_report",
                    "key": "cb_id",
                    "create": "FraudReported",
                    "update": "FraudReported",
                    "fields": {
                        "report_id": "cb_id",
                        "transaction_id": "payment_ref",
                        "kind": "reason",
                        "reported_at": "filed",
                    },
                }
            }
        }
    )
    value = {
        "before": None,
        "after": {"cb_id": 9, "payment_ref": 77, "reason": "chargeback", "filed": 1_795_000_000_000},
        "source": {"table": "chargebacks", "lsn": 10, "ts_ms": 1_795_000_000_000},
        "op": "c",
    }
    event = decode("core.dbo.chargebacks", json.dumps(value).encode(), mapping)
    assert event == FraudReported(event.position, 9, 77, "chargeback", datetime.fromtimestamp(1_795_000_000, UTC))


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=2000)
    | st.text(max_size=500).map(str.encode)
    | st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5),
        max_leaves=30,
    ).map(lambda doc: json.dumps(doc).encode())
)
def test_anything_either_decodes_or_fails_with_a_known_reason(value):
    try:
        decode("bank.public.transactions", value, MAPPING)
    except DecodeError as err:
        assert err.reason in REASONS


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=50),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=10,
)


@settings(max_examples=400, deadline=None)
@given(
    variant=st.sampled_from(VARIANTS),
    stem=st.sampled_from(
        ["transactions.c", "transactions.u", "customers.c", "logins.c", "fraud_reports.c", "transactions.d"]
    ),
    part=st.sampled_from(["after", "before", "source", "op", "envelope"]),
    column=st.text(max_size=12)
    | st.sampled_from(["id", "amount", "account_id", "created_at", "ip", "lsn", "ts_ms", "table"]),
    replacement=JSON_VALUES,
)
def test_mutated_real_envelopes_decode_or_fail_with_a_known_reason(variant, stem, part, column, replacement):
    fx = fixture(variant, stem)
    doc = json.loads(fx["value"])
    payload = doc.get("payload", doc)
    if part == "envelope":
        payload[column] = replacement
    elif part == "op":
        payload["op"] = replacement
    elif isinstance(payload.get(part), dict):
        payload[part][column] = replacement
    else:
        payload[part] = replacement
    mode = fx["connector_config"]["decimal.handling.mode"]
    # Spaced JSON is parsed whole; compact, as Kafka Connect writes it, takes the split path
    # (``_split_envelope``): both must give the same event or the same reason.
    spaced = outcome(fx["topic"], json.dumps(doc).encode(), mode)
    compact = outcome(fx["topic"], json.dumps(doc, separators=(",", ":")).encode(), mode)
    assert spaced == compact
    if isinstance(spaced, str):
        assert spaced in REASONS


def outcome(topic: str, value: bytes, mode: str):
    try:
        return decode(topic, value, MAPPING, mode)
    except DecodeError as err:
        return err.reason


@pytest.mark.parametrize("variant", ["double-schema", "precise-schema"])
def test_connect_envelopes_decode_by_the_split_path_as_parsed_whole(variant):
    for path in sorted((FIXTURES / variant).glob("*.json")):
        fx = fixture(variant, path.stem)
        if fx["value"] is None:
            continue
        value, mode = fx["value"].encode(), fx["connector_config"]["decimal.handling.mode"]
        assert _split_envelope(value) is not None, path.stem  # the bytes Connect wrote
        assert outcome(fx["topic"], value, mode) == outcome(fx["topic"], json.dumps(json.loads(value)).encode(), mode)


def test_a_payload_key_inside_the_schema_does_not_move_the_split():
    real = json.loads(fixture("precise-schema", "transactions.c")["value"])
    other = json.loads(fixture("precise-schema", "customers.c")["value"])["payload"]
    envelope = {"schema": {**real["schema"], "payload": other}, "payload": real["payload"]}
    value = json.dumps(envelope, separators=(",", ":")).encode()
    assert _split_envelope(value) is None  # the cut falls inside the schema, which then does not parse
    assert type(decode("bank.public.transactions", value, MAPPING)) is TransactionCreated
