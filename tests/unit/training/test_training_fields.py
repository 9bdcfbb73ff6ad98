"""What a trained model's card lists as the fields it was trained with: of the fields its training
data provided (the CDC mapping, or what a CSV log's reader fills), those that reach a model's inputs."""

from __future__ import annotations

from dataclasses import fields

from fraudgraph.connectors import events as ev
from fraudgraph.connectors.csv_log import read_csv_log
from fraudgraph.connectors.csv_log_mapping import parse_csv_log_mapping
from fraudgraph.connectors.mapping import DEFAULT_MAPPING, _declaring
from fraudgraph.settings import load_settings
from fraudgraph.streams.state import MODEL_INPUTS
from fraudgraph.training.train import csv_log_fields, trained_fields, training_fields

CSV = "when,from_acct,to_acct,amt,dev,fraud\n2024-03-01T00:00:00,A,B,10.00,D1,no\n2024-03-01T00:10:00,B,C,99.00,,yes\n"
CSV_MAPPING = {
    "ids": "first_seen",
    "fraud_values": ["yes"],
    "non_fraud_values": ["no"],
    "columns": {
        "time": "when",
        "source": "from_acct",
        "target": "to_acct",
        "amount": "amt",
        "device": "dev",
        "label": "fraud",
    },
}


def test_only_fields_that_reach_a_model_are_listed_sorted():
    present = {"CustomerUpserted.full_name", "TransactionRow.ip", "TransactionRow.amount", "FraudReported.reported_at"}
    assert trained_fields(present) == ["TransactionRow.amount", "TransactionRow.ip"]


def test_the_reference_mapping_provides_every_model_input():
    assert training_fields(load_settings({})) == sorted(MODEL_INPUTS)


def test_a_mapping_without_a_device_column_trains_a_model_without_it(tmp_path):
    text = DEFAULT_MAPPING.read_text().replace(', device_id = "device_id", ip = "ip", status', ", status")
    (tmp_path / "bank.toml").write_text(text)
    listed = training_fields(load_settings({}, mapping_file=str(tmp_path / "bank.toml")))
    assert "TransactionRow.device_id" not in listed and "TransactionRow.ip" not in listed
    assert "LoginRecorded.device_id" in listed  # logins still map theirs


def test_csv_log_fields_are_what_the_reader_fills(tmp_path):
    (tmp_path / "log.csv").write_text(CSV)
    mapping = parse_csv_log_mapping(CSV_MAPPING)
    events = list(read_csv_log(tmp_path / "log.csv", mapping))
    filled = {
        f"{_declaring(type(e), f.name)}.{f.name}"
        for e in events
        for f in fields(e)
        if f.name != "position" and getattr(e, f.name) is not None
    }
    assert {type(e) for e in events} == {ev.TransactionCreated, ev.FraudReported}
    assert filled == csv_log_fields(mapping)  # none promised and left empty, none filled and not listed
    assert "TransactionRow.merchant_id" not in filled and "TransactionRow.ip" not in filled

    (tmp_path / "log.toml").write_text(
        'ids = "first_seen"\nfraud_values = ["yes"]\nnon_fraud_values = ["no"]\n\n[columns]\ntime = "when"\n'
        'source = "from_acct"\ntarget = "to_acct"\namount = "amt"\ndevice = "dev"\nlabel = "fraud"\n'
    )
    assert training_fields(load_settings({}), tmp_path / "log.toml") == [
        "TransactionRow.account_id",
        "TransactionRow.amount",
        "TransactionRow.counterparty_account_id",
        "TransactionRow.created_at",
        "TransactionRow.device_id",
        "TransactionRow.kind",
        "TransactionRow.transaction_id",
    ]
