"""The workload simulator: reproducible, time-ordered, referentially sound, labelled as configured,
and encoded exactly as Debezium encodes (checked against captured events). No services needed."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fraudgraph.stack.simulator import PATTERNS, SimConfig, generate
from fraudgraph.stack.simulator.envelope import (
    DebeziumEncoder,
    decode_decimal,
    encode_decimal,
    encode_timestamp,
    key_schema,
    value_schema,
)
from fraudgraph.stack.simulator.rows import FOREIGN_KEYS, TABLES

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "debezium" / "precise-schema"
START = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def run():
    """One mid-sized run shared by the structural tests (explicit report delays to test them)."""
    config = SimConfig(
        customers=2000, duration_s=3600, start=START, fraud_rate=0.05, seed=11, report_delay_s=(120.0, 1800.0)
    )
    rows, truth = generate(config)
    return config, rows, truth


def small(**kw):
    return generate(SimConfig(**({"customers": 200, "duration_s": 900, "start": START, "fraud_rate": 0.05} | kw)))


# ---- reproducibility ----
def test_same_seed_same_stream():
    rows_a, truth_a = small(seed=3)
    rows_b, truth_b = small(seed=3)
    assert rows_a == rows_b
    assert truth_a == truth_b


def test_different_seed_different_stream():
    rows_a, _ = small(seed=3)
    rows_b, _ = small(seed=4)
    assert rows_a != rows_b


def test_fraud_rate_does_not_change_the_bank_book():
    """Population and legit activity draw from their own generators: the t=0 book is identical."""
    book = lambda rows: [r for r in rows if r.at == START]
    assert book(small(seed=5, fraud_rate=0.0)[0]) == book(small(seed=5, fraud_rate=0.1)[0])


# ---- fraud labels ----
def test_every_pattern_appears(run):
    _, _, truth = run
    counts = truth.pattern_counts()
    assert set(counts) == set(PATTERNS)
    assert all(n > 0 for n in counts.values()), counts


def test_fraud_rate_is_approximately_respected(run):
    _, _, truth = run
    assert truth.legit_transactions > 2000
    assert abs(truth.fraud_fraction - 0.05) < 0.01, truth.fraud_fraction


def test_zero_fraud_rate_means_no_fraud():
    rows, truth = small(seed=1, fraud_rate=0.0)
    assert truth.labels == {}
    assert {r.values["kind"] for r in rows if r.table == "fraud_reports"} <= {"false_positive"}


def test_labels_match_emitted_transactions(run):
    _, rows, truth = run
    inserted = {r.values["id"] for r in rows if r.table == "transactions" and r.op == "insert"}
    assert set(truth.labels) <= inserted
    assert len(inserted) == truth.legit_transactions + truth.fraud_transactions


def test_reports_come_late_and_only_for_fraud(run):
    config, rows, truth = run
    lo, hi = config.report_delay()
    created = {r.values["id"]: r.values["created_at"] for r in rows if r.table == "transactions" and r.op == "insert"}
    reports = [r for r in rows if r.table == "fraud_reports"]
    assert reports
    for r in reports:
        tid, kind = r.values["transaction_id"], r.values["kind"]
        delay = (r.values["reported_at"] - created[tid]).total_seconds()
        assert lo <= delay <= hi + 1e-6, (tid, delay)
        assert r.at == r.values["reported_at"]
        if kind == "false_positive":
            assert not truth.is_fraud(tid) and tid in truth.false_positives
        else:
            assert kind in ("chargeback", "confirmed_fraud") and truth.is_fraud(tid)
    reported = {r.values["transaction_id"] for r in reports if r.values["kind"] != "false_positive"}
    assert reported == set(truth.labels)  # report_coverage defaults to 1: every fraud is labelled eventually


def test_a_log_stopped_at_the_end_holds_only_what_was_due_by_then():
    full, _ = small(seed=4)
    stopped, _ = small(seed=4, stop_at_end=True)
    end = START + timedelta(seconds=900)
    assert stopped == [r for r in full if r.at < end]
    assert len(stopped) < len(full) and any(r.table == "fraud_reports" for r in full if r.at >= end)


def test_default_report_delay_scales_with_duration():
    assert SimConfig(duration_s=86_400).report_delay() == (600.0, 21_600.0)
    lo, hi = SimConfig(duration_s=600).report_delay()
    assert 0 < lo < hi <= 300


# ---- integrity and order ----
def test_time_order_and_timestamps(run):
    config, rows, _ = run
    assert all(a.at <= b.at for a, b in zip(rows, rows[1:]))
    assert rows[0].at == config.start
    for r in rows:
        if r.table == "transactions":
            assert r.values["updated_at"] == r.at
        elif r.table in ("logins", "profile_changes"):
            assert r.values["at"] == r.at
        assert all(v.tzinfo is not None for v in r.values.values() if isinstance(v, datetime))


def test_foreign_keys_reference_earlier_rows(run):
    _, rows, _ = run
    seen: dict[str, set] = defaultdict(set)
    for r in rows:
        if r.op == "insert":
            assert r.values["id"] not in seen[r.table], f"duplicate {r.table} id {r.values['id']}"
        else:
            assert r.values["id"] in seen[r.table], f"update of unknown {r.table} {r.values['id']}"
        for (table, column), target in FOREIGN_KEYS.items():
            if table == r.table and r.values[column] is not None:
                assert r.values[column] in seen[target], f"{table}.{column}={r.values[column]} not yet in {target}"
        seen[r.table].add(r.values["id"])


def test_rows_fit_the_schema(run):
    _, rows, _ = run
    for r in rows[:20_000]:
        assert list(r.values) == [c.name for c in TABLES[r.table]]
        for c in TABLES[r.table]:
            v = r.values[c.name]
            assert v is not None or c.nullable, (r.table, c.name)
    for r in rows:
        if r.table == "transactions":
            v = r.values
            assert v["amount"] > 0 and v["amount"].as_tuple().exponent == -2
            assert (v["merchant_id"] is not None) == (v["kind"] == "card_payment")
            assert (v["counterparty_account_id"] is not None) == (v["kind"] == "transfer")
            assert len(v["currency"]) == 3
        elif r.table == "customers":
            assert len(r.values["country"]) == 2 and r.values["kyc_level"] in (0, 1, 2)


def test_transaction_lifecycle(run):
    _, rows, _ = run
    pending = {}
    finals = Counter()
    for r in rows:
        if r.table != "transactions":
            continue
        if r.op == "insert":
            assert r.values["status"] == "pending"
            pending[r.values["id"]] = r.values
        else:
            before = pending.pop(r.values["id"])
            assert r.before == before
            assert r.values["status"] in ("authorized", "settled", "declined")
            assert r.at > before["created_at"]
            assert {k: v for k, v in r.values.items() if k not in ("status", "updated_at")} == {
                k: v for k, v in before.items() if k not in ("status", "updated_at")
            }
            finals[r.values["status"]] += 1
    assert not pending
    assert finals["declined"] < 0.1 * sum(finals.values())


def test_legit_customers_are_creatures_of_habit(run):
    """Most of a customer's card spend goes to a few merchants; logins come from known devices."""
    _, rows, truth = run
    by_account: dict[int, Counter] = defaultdict(Counter)
    for r in rows:
        v = r.values
        if (
            r.table == "transactions"
            and r.op == "insert"
            and v["kind"] == "card_payment"
            and not truth.is_fraud(v["id"])
        ):
            by_account[v["account_id"]][v["merchant_id"]] += 1
    busy = [c for c in by_account.values() if sum(c.values()) >= 4]
    top3 = sum(sum(n for _, n in c.most_common(3)) for c in busy) / sum(sum(c.values()) for c in busy)
    assert top3 > 0.5, top3
    kinds = Counter(r.values["kind"] for r in rows if r.table == "transactions" and r.op == "insert")
    assert set(kinds) == {"card_payment", "transfer", "withdrawal", "topup"}


def test_account_takeover_changes_profile_before_transfer(run):
    _, rows, truth = run
    changes = defaultdict(list)
    account_owner = {r.values["id"]: r.values["customer_id"] for r in rows if r.table == "accounts"}
    for r in rows:
        if r.table == "profile_changes":
            changes[r.values["customer_id"]].append(r.at)
    ato = [
        r
        for r in rows
        if r.table == "transactions" and r.op == "insert" and truth.labels.get(r.values["id"]) == "account_takeover"
    ]
    assert ato
    for r in ato:
        assert r.values["kind"] == "transfer"
        assert any(t < r.at for t in changes[account_owner[r.values["account_id"]]])


def test_tables_match_reference_schema():
    sql = (ROOT / "connectors" / "bank_schema.sql").read_text()
    for table, columns in TABLES.items():
        body = re.search(rf"CREATE TABLE {table} \((.*?)\n\);", sql, re.S).group(1)
        names = [line.split()[0] for line in body.strip().splitlines()]
        assert names == [c.name for c in columns], table
        for c, line in zip(columns, body.strip().splitlines()):
            assert ("NOT NULL" in line or "PRIMARY KEY" in line) != c.nullable, (table, c.name)


# ---- Debezium encoding ----
@given(
    st.decimals(
        min_value=Decimal("-9999999999999999.99"),
        max_value=Decimal("9999999999999999.99"),
        places=2,
        allow_nan=False,
        allow_infinity=False,
    )
)
def test_decimal_round_trips(value):
    assert decode_decimal(encode_decimal(value, 2), 2) == value


def test_decimal_matches_debezium_bytes():
    # Values from the captured precise-schema events (BigInteger.toByteArray: minimal two's complement).
    assert encode_decimal(Decimal("1234567890123456.78"), 2) == "AbabS6Yw804="
    assert encode_decimal(Decimal("0.01"), 2) == "AQ=="
    assert encode_decimal(Decimal("42.50"), 2) == "EJo="
    assert encode_decimal(Decimal("1.28"), 2) == "AIA="  # 128 needs a leading zero byte for its sign
    assert encode_decimal(Decimal("-1.28"), 2) == "gA=="
    with pytest.raises(ValueError):
        encode_decimal(Decimal("0.001"), 2)


def test_timestamp_format():
    assert encode_timestamp(datetime(2026, 11, 23, 9, 48, 19, 615670, tzinfo=UTC)) == "2026-11-23T09:48:19.615670Z"
    plus2 = timezone(timedelta(hours=2))
    assert encode_timestamp(datetime(2026, 1, 1, 2, 0, tzinfo=plus2)) == "2026-01-01T00:00:00.000000Z"


def _fixtures():
    return sorted(FIXTURES.glob("*.[cu].json")) if FIXTURES.is_dir() else []


@pytest.mark.skipif(not _fixtures(), reason="no captured Debezium fixtures")
@pytest.mark.parametrize("path", _fixtures(), ids=lambda p: p.stem)
def test_envelope_matches_captured_debezium(path):
    fixture = json.loads(path.read_text())
    table, op = path.stem.split(".")
    captured_value, captured_key = json.loads(fixture["value"]), json.loads(fixture["key"])
    # Byte-for-byte schema text, so field order and flags match, not just content.
    assert json.dumps(value_schema("bank", table)) == json.dumps(captured_value["schema"])
    assert json.dumps(key_schema("bank", table)) == json.dumps(captured_key["schema"])
    # The same row, encoded by us, has the same payload shape and values except positions and times.
    payload = captured_value["payload"]
    from fraudgraph.connectors.decoder import decode  # the engine's own reading of the event
    from fraudgraph.connectors.mapping import load_mapping
    from fraudgraph.stack.simulator.rows import Row

    mapping = load_mapping()
    expected = decode(fixture["topic"], fixture["value"].encode(), mapping)
    to_row = lambda image: image and {c.name: _typed(c, image[c.name]) for c in TABLES[table]}
    row = Row(
        table,
        {"c": "insert", "u": "update"}[op],
        to_row(payload["after"]),
        datetime.fromtimestamp(payload["source"]["ts_us"] / 1e6, UTC),
        to_row(payload["before"]),
    )
    topic, key, value = DebeziumEncoder("bank").encode(row)
    ours = json.loads(value)
    assert topic == fixture["topic"]
    assert json.loads(key) == captured_key
    assert list(ours["payload"]) == list(payload)
    assert list(ours["payload"]["source"]) == list(payload["source"])
    assert ours["payload"]["after"] == payload["after"] and ours["payload"]["before"] == payload["before"]
    assert ours["payload"]["op"] == payload["op"]
    assert ours["payload"]["source"]["ts_us"] == payload["source"]["ts_us"]
    ours_decoded = decode(topic, value, mapping, key=key)
    assert type(ours_decoded) is type(expected)
    assert {k: v for k, v in vars_of(ours_decoded).items() if k != "position"} == {
        k: v for k, v in vars_of(expected).items() if k != "position"
    }


def vars_of(event) -> dict:
    return {name: getattr(event, name) for name in event.__slots__} if hasattr(event, "__slots__") else vars(event)


def _typed(column, raw):
    if raw is None:
        return None
    if column.sql_type == "numeric":
        return decode_decimal(raw, column.scale)
    if column.sql_type == "timestamptz":
        return datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return raw


def test_generated_stream_decodes_with_the_engine_decoder():
    from fraudgraph.connectors.decoder import decode
    from fraudgraph.connectors.events import FraudReported, TransactionCreated, TransactionUpdated
    from fraudgraph.connectors.mapping import load_mapping

    rows, truth = small(seed=2, fraud_rate=0.1)
    mapping, encoder = load_mapping(), DebeziumEncoder("bank", clock=lambda: 1.7e9)
    last_lsn, types = 0, Counter()
    for i, row in enumerate(rows):
        topic, key, value = encoder.encode(row)
        if i % 50 == 49:
            encoder.commit()
        event = decode(topic, value, mapping, key=key)
        assert event.position.lsn > last_lsn
        last_lsn = event.position.lsn
        types[type(event).__name__] += 1
        if isinstance(event, TransactionCreated):
            assert event.amount == row.values["amount"] and event.created_at == row.at
        if isinstance(event, TransactionUpdated):
            assert event.previous_status == "pending"
        if isinstance(event, FraudReported):
            assert truth.is_fraud(event.transaction_id) or event.kind == "false_positive"
    assert {"CustomerUpserted", "TransactionCreated", "TransactionUpdated", "FraudReported", "LoginRecorded"} <= set(
        types
    )


class FakeProducer:
    def __init__(self, config=None):
        self.sent = []

    def produce(self, topic, value, key, on_delivery):
        self.sent.append((topic, key, value))
        on_delivery(None, None)

    def poll(self, timeout):
        return 0

    def flush(self, timeout):
        return 0


def test_kafka_sink_keys_order_and_transactions():
    from fraudgraph.settings import Settings
    from fraudgraph.stack.simulator.kafka_sink import write_kafka

    rows, _ = small(seed=8, customers=50, duration_s=300)
    producer = FakeProducer()
    report = write_kafka(rows, Settings(topic_prefix="sim"), batch_rows=100, producer=producer)
    assert report.total == len(rows) == len(producer.sent)
    assert report.commits == -(-len(rows) // 100)
    tx_ids, lsns = [], []
    for (topic, key, value), row in zip(producer.sent, rows):
        assert topic == f"sim.public.{row.table}"
        assert json.loads(key)["payload"] == {"id": row.values["id"]}
        source = json.loads(value)["payload"]["source"]
        tx_ids.append(source["txId"])
        lsns.append(source["lsn"])
    assert lsns == sorted(lsns) and len(set(lsns)) == len(lsns)
    assert Counter(tx_ids).most_common(1)[0][1] == 100


def test_postgres_statements_use_identifiers_and_parameters():
    from fraudgraph.stack.simulator.postgres_sink import _params, _statements

    statements = _statements()
    text = statements["transactions", "update"].as_string(None)
    assert text.startswith('UPDATE "transactions" SET "account_id" = %s') and text.endswith('WHERE "id" = %s')
    assert statements["customers", "insert"].as_string(None).count("%s") == len(TABLES["customers"])
    rows, _ = small(seed=1, customers=20, duration_s=120)
    update = next(r for r in rows if r.op == "update")
    assert _params(update)[-1] == update.values["id"]


def test_producer_config_is_valid_for_librdkafka():
    from confluent_kafka import Producer

    from fraudgraph.settings import Settings
    from fraudgraph.stack.simulator.kafka_sink import producer_config

    # Construction validates every property offline; port 1 so nothing is contacted.
    Producer(producer_config(Settings(kafka_bootstrap="127.0.0.1:1")) | {"log_level": 0})


def test_simulate_reports_what_it_wrote(monkeypatch):
    from fraudgraph.settings import Settings
    from fraudgraph.stack import simulator
    from fraudgraph.stack.simulator import kafka_sink

    producers = []
    monkeypatch.setattr(kafka_sink, "ensure_topics", lambda settings: None)
    monkeypatch.setattr(kafka_sink, "Producer", lambda config: producers.append(FakeProducer()) or producers[-1])
    report = simulator.simulate(
        Settings(), mode="kafka", customers=100, duration_s=600, fraud_rate=0.05, seed=2, start=START, id_base=10_000
    )
    assert report.total_rows == len(producers[0].sent)
    assert report.rows["transactions"]["insert"] == report.legit_transactions + sum(report.fraud_by_pattern.values())
    assert report.config.id_base == 10_000 and report.config.start == START
    assert sum(report.fraud_reports.values()) == report.rows["fraud_reports"]["insert"]
    assert json.dumps(report.to_dict())  # serialisable for the CLI's --json
    with pytest.raises(ValueError):
        simulator.simulate(Settings(), mode="neo4j")
