"""``fraudgraph mapping check`` without Kafka: the report built from captured Debezium envelopes
(tests/fixtures/debezium) with a good mapping, with one whose column name is wrong, and the command's
output and exit codes with the Kafka sample replaced by those envelopes."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from fraudgraph import cli
from fraudgraph.connectors import mapping_check as mc
from fraudgraph.connectors.mapping import DEFAULT_MAPPING, load_mapping, parse_mapping

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "debezium"
VARIANTS = sorted(p.name for p in FIXTURES.iterdir())
GOOD = load_mapping()


def bank_toml() -> dict:
    with open(DEFAULT_MAPPING, "rb") as fh:
        return tomllib.load(fh)


def wrong_amount_text() -> str:
    """The shipped mapping with transactions' amount read from a column the schema does not have."""
    text = DEFAULT_MAPPING.read_text()
    wrong = text.replace('amount = { column = "amount",', 'amount = { column = "amount_minor",')
    assert wrong != text
    return wrong


def wrong_amount_column() -> dict:
    return tomllib.loads(wrong_amount_text())


def records(variant: str) -> tuple[dict[str, list[mc.Record]], str]:
    """Every captured envelope of a variant, by table; and the variant's decimal.handling.mode."""
    out: dict[str, list[mc.Record]] = {}
    mode = "precise"
    for path in sorted((FIXTURES / variant).glob("*.json")):
        fx = json.loads(path.read_text())
        mode = fx["connector_config"]["decimal.handling.mode"]
        key = fx["key"].encode() if fx["key"] is not None else None
        value = fx["value"].encode() if fx["value"] is not None else None
        out.setdefault(path.name.split(".")[0], []).append((fx["topic"], key, value))
    return out, mode


@pytest.mark.parametrize("variant", VARIANTS)
def test_good_mapping_decodes_every_table(variant):
    recs, mode = records(variant)
    report = mc.check_mapping(GOOD, recs, "bank", mode)
    assert [t.table for t in report.tables] == list(GOOD.tables)
    for t in report.tables:
        assert t.topic == f"bank.public.{t.table}"
        assert t.status == mc.OK and not t.failures, (t.table, t.failures)
        assert t.read == len(recs[t.table]) and t.decoded + t.tombstones == t.read
        assert t.rows >= 2  # the create and the snapshot read at least
    tx = next(t for t in report.tables if t.table == "transactions")
    assert tx.tombstones == 1 and tx.events["EntityDeleted"] == 1 and tx.events["TransactionUpdated"] == 1
    assert tx.events["TransactionCreated"] == 2 and tx.rows == 3
    assert tx.unknown_fields == {"TransactionCreated": [], "TransactionUpdated": []}
    assert next(t for t in report.tables if t.table == "customers").unknown_fields == {"CustomerUpserted": []}
    assert report.exit_code == 0 and report.failing == []


@pytest.mark.parametrize("variant", VARIANTS)
def test_wrong_column_fails_the_table_entirely_and_names_the_column(variant):
    recs, mode = records(variant)
    report = mc.check_mapping(parse_mapping(wrong_amount_column()), recs, "bank", mode)
    tx = next(t for t in report.tables if t.table == "transactions")
    # Every row fails; the delete decodes from its key, and is not a row: the table still fails entirely.
    assert tx.status == mc.ALL_FAILED and tx.rows == 0 and tx.events == {"EntityDeleted": 1}
    assert set(tx.failures) == {"missing_field"} and tx.failures["missing_field"].count == 3
    assert tx.failures["missing_field"].first_detail == "transactions.amount_minor is null or absent"
    assert [t.table for t in report.failing] == ["transactions"] and report.exit_code == 1
    assert all(t.status == mc.OK for t in report.tables if t.table != "transactions")
    text = mc.describe(report)
    line = next(line for line in text.splitlines() if line.startswith("transactions "))
    assert "all failed" in line and "missing_field=3" in line and "bank.public.transactions" in line
    assert "    first missing_field: transactions.amount_minor is null or absent" in text
    assert text.splitlines()[-1].startswith("FAILED: no row decoded in transactions")


def test_some_rows_failing_is_reported_without_failing_the_table():
    recs, mode = records("precise-schema")
    good = recs["transactions"]
    bad = [(good[0][0], None, b"{not json"), (good[0][0], None, b'{"op": "c"}')]
    report = mc.check_table(GOOD, "transactions", "bank.public.transactions", [*bad, *good, bad[0]], mode)
    assert report.status == mc.SOME_FAILED and report.failed == 3
    assert report.failures["not_json"].count == 2 and report.failures["not_an_envelope"].count == 1
    assert report.failures["not_an_envelope"].first_detail == "no op/source: not a Debezium change event"


def test_tables_without_records_are_reported_not_failed():
    recs, mode = records("double-schema")
    only = {"transactions": recs["transactions"], "devices": [("bank.public.devices", None, None)]}
    report = mc.check_mapping(GOOD, only, "bank", mode, notes={"merchants": "topic does not exist"})
    by = {t.table: t for t in report.tables}
    assert by["transactions"].status == mc.OK
    assert by["devices"].status == mc.NO_RECORDS and by["devices"].tombstones == 1  # a tombstone is not a record
    assert by["customers"].status == mc.NO_RECORDS and by["customers"].read == 0
    assert by["merchants"].note == "topic does not exist"
    assert report.exit_code == 0
    assert "    note: topic does not exist" in mc.describe(report)
    assert mc.describe(report).splitlines()[-1] == "8 tables: 1 ok, 7 no records"


def test_unknown_fields_per_event_type():
    data = bank_toml()
    del data["tables"]["transactions"]["fields"]["device_id"]
    del data["tables"]["transactions"]["before"]
    data["tables"]["customers"]["fields"] = {
        k: v for k, v in data["tables"]["customers"]["fields"].items() if k != "phone"
    }
    mapping = parse_mapping(data)
    recs, mode = records("string-schemaless")
    report = mc.check_mapping(mapping, recs, "bank", mode)
    by = {t.table: t for t in report.tables}
    assert by["transactions"].unknown_fields == {
        "TransactionCreated": ["device_id"],
        "TransactionUpdated": ["device_id", "previous_status"],
    }
    assert by["customers"].unknown_fields == {"CustomerUpserted": ["phone"]}
    assert by["transactions"].status == mc.OK  # unknown is not a failure
    text = mc.describe(report)
    assert "    unknown fields: TransactionCreated: device_id; TransactionUpdated: device_id, previous_status" in text
    assert "    unknown fields: CustomerUpserted: phone" in text
    assert report.to_dict()["tables"][0]["unknown_fields"] == {"CustomerUpserted": ["phone"]}


def test_report_as_json():
    recs, mode = records("precise-schemaless")
    report = mc.check_mapping(parse_mapping(wrong_amount_column()), recs, "bank", mode).to_dict()
    assert report["ok"] is False
    tx = next(t for t in report["tables"] if t["table"] == "transactions")
    assert tx["status"] == "all failed" and tx["failed"] == 3 and tx["read"] == 5 and tx["tombstones"] == 1
    assert tx["failures"] == {"missing_field": {"count": 3, "first": "transactions.amount_minor is null or absent"}}
    json.dumps(report)  # serialisable as is


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "No such file"),
        ("[tables.x\n", "mapping "),  # not TOML
        ('[tables.t]\nentity = "t"\nkey = "id"\nupdate = "CustomerUpserted"\n', "missing ['create']"),
        ('[tables.t]\nentity = "t"\nkey = "id"\ncreate = "Nope"\nupdate = "Nope"\n', "unknown event 'Nope'"),
        ('[tables.t]\nentity = "t"\nkey = "id"\ncreate = "CustomerUpserted"\nupdate = "CustomerUpserted"\n', "missing"),
        (
            '[tables.t]\nentity = "t"\nkey = "id"\ncreate = "CustomerUpserted"\nupdate = "CustomerUpserted"\nfields = 3\n',
            "",
        ),
    ],
)
def test_a_mapping_that_does_not_load_is_an_error_naming_the_file(tmp_path, text, message):
    path = tmp_path / "m.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(mc.MappingLoadError) as err:
        mc.load(path)
    assert str(err.value).startswith(f"mapping {path}: ") and message in str(err.value)


# ---- the command, with the Kafka sample replaced by the captured envelopes ----


@pytest.fixture
def fake_kafka(monkeypatch):
    recs, _ = records("precise-schema")
    by_topic = {rs[0][0]: rs for rs in recs.values()}
    asked = {}

    def sample_topics(settings, topics, n, timeout_s=30.0):
        asked.update(topics=topics, n=n, timeout_s=timeout_s)
        missing = [t for t in topics if t not in by_topic]
        return mc.Sample({t: by_topic.get(t, [])[:n] for t in topics}, missing, [])

    monkeypatch.setattr(mc, "sample_topics", sample_topics)
    monkeypatch.delenv("FRAUDGRAPH_TOPIC_PREFIX", raising=False)
    monkeypatch.delenv("FRAUDGRAPH_DECIMAL_HANDLING_MODE", raising=False)
    return asked


def test_command_passes_a_good_mapping(fake_kafka, capsys):
    assert cli.main(["mapping", "check", "--mapping", str(DEFAULT_MAPPING), "--sample", "50"]) == 0
    out = capsys.readouterr().out
    assert fake_kafka["n"] == 50 and fake_kafka["topics"] == [f"bank.public.{t}" for t in GOOD.tables]
    assert out.splitlines()[0].split() == [
        "table", "topic", "read", "decoded", "rows", "tombstones", "status", "failures",
    ]  # fmt: skip
    assert out.splitlines()[-1] == "8 tables: 8 ok"


def test_command_fails_a_wrong_column_and_names_it(fake_kafka, capsys, tmp_path):
    path = tmp_path / "wrong.toml"
    path.write_text(wrong_amount_text())
    assert cli.main(["mapping", "check", "--mapping", str(path)]) == 1
    out = capsys.readouterr().out
    assert "transactions.amount_minor is null or absent" in out and "FAILED: no row decoded in transactions" in out
    assert cli.main(["mapping", "check", "--mapping", str(path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and [t["table"] for t in report["tables"] if t["status"] == "all failed"] == [
        "transactions"
    ]


def test_command_refuses_a_mapping_that_does_not_load_before_reading_kafka(fake_kafka, capsys, tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text(DEFAULT_MAPPING.read_text().replace('create = "TransactionCreated"', 'create = "TxCreated"'))
    assert cli.main(["mapping", "check", "--mapping", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: mapping {path}: ") and "unknown event 'TxCreated'" in err
    assert fake_kafka == {}  # Kafka was not asked
    assert cli.main(["mapping", "check", "--mapping", str(tmp_path / "absent.toml")]) == 2
    assert cli.main(["mapping", "check", "--sample", "0"]) == 2


def test_command_without_a_broker_is_exit_3(monkeypatch, capsys):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("FRAUDGRAPH_KAFKA_BOOTSTRAP", f"127.0.0.1:{port}")
    assert cli.main(["mapping", "check", "--timeout", "1"]) == 3
    assert capsys.readouterr().err.startswith(f"error: Kafka at 127.0.0.1:{port}: ")
