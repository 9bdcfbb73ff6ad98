"""Training from point-in-time replays: no example sees its future, and the model trained on the
simulator's log catches its fraud on a later time window."""

from __future__ import annotations

import pytest
import torch

from fraudgraph.connectors import events as ev
from fraudgraph.models.batch import encode
from fraudgraph.models.features import FEATURE_WIDTHS
from fraudgraph.models.hetero import FRAUD_RELATIONS
from fraudgraph.models.rgcn import HeteroRGCN
from fraudgraph.settings import load_settings
from fraudgraph.stack.simulator.config import SimConfig
from fraudgraph.training.replay import decoded, event_time_order, replay, simulator_records
from fraudgraph.training.train import TrainConfig, train

SETTINGS = load_settings({})


def simulated(customers: int, hours: float, seed: int) -> list[ev.DomainEvent]:
    cfg = SimConfig(customers=customers, duration_s=hours * 3600, seed=seed, fraud_rate=0.03)
    return event_time_order(decoded(simulator_records(cfg, SETTINGS), SETTINGS))


def test_examples_are_point_in_time():
    """Example i from the whole log equals the last example of the log cut right after it: nothing
    that happened later (neighbours' later transactions, labels) leaks into its features."""
    events = simulated(100, 6, seed=3)
    full = replay(events)
    tx_at = [i for i, e in enumerate(events) if isinstance(e, ev.TransactionCreated)]
    model = HeteroRGCN(FEATURE_WIDTHS, FRAUD_RELATIONS, hidden=8, out_channels=1).double()
    for k in (0, len(tx_at) // 3, len(tx_at) // 2, len(tx_at) - 2):
        cut = replay(events[: tx_at[k] + 1])
        assert cut.examples[-1].transaction_id == full.examples[k].transaction_id
        with torch.no_grad():
            a, _ = model.score_batch(encode([cut.examples[-1].request], model).to("cpu", torch.float64))
            b, _ = model.score_batch(encode([full.examples[k].request], model).to("cpu", torch.float64))
        assert torch.equal(a, b)
    # labels come only from fraud reports in the log
    reported = {e.transaction_id for e in events if isinstance(e, ev.FraudReported) and e.kind != "false_positive"}
    assert {t for t, y in full.labels.items() if y} == reported and reported


@pytest.mark.slow
def test_model_trained_on_the_simulator_catches_fraud_in_a_later_window():
    """The issue's bar: recall >= 90% at FPR <= 1% on the later (test) window, at the threshold
    chosen on the validation window (not on the test window itself)."""
    torch.set_num_threads(2)
    log = replay(simulated(300, 36, seed=1))
    ex = log.examples
    _, report = train(
        [e.request for e in ex],
        [log.label(e.transaction_id) for e in ex],
        [e.ts_ms for e in ex],
        TrainConfig(epochs=60, patience=10),
    )
    test = report["test"]
    assert report["windows"]["test"]["first_ts_ms"] > report["windows"]["validation"]["last_ts_ms"] - 1
    assert test["positives"] >= 100
    assert test["recall_at_threshold"] >= 0.90, report["test"]
    assert test["fpr_at_threshold"] <= 0.01, report["test"]


@pytest.mark.slow  # several seconds: runs in `make test`
def test_train_command_registers_a_servable_model(tmp_path, monkeypatch, capsys):
    from fraudgraph.cli import main
    from fraudgraph.models.registry import ModelRegistry

    monkeypatch.setenv("FRAUDGRAPH_MODEL_DIR", str(tmp_path))
    assert (
        main(
            [
                "train",
                "--source",
                "simulator",
                "--customers",
                "120",
                "--hours",
                "8",
                "--epochs",
                "3",
                "--fraud-rate",
                "0.05",
                "--report",
                str(tmp_path / "report.json"),
            ]
        )
        == 0
    )
    reg = ModelRegistry(tmp_path)
    version = reg.current_version()
    assert version and version in capsys.readouterr().out
    model, card = reg.load(version)
    assert 0 < card.threshold <= 1 and card.metrics["test"]["n"] > 0 and card.trained_on["source"] == "simulator"
    assert card.trained_on["windows"]["test"]["first_ts_ms"] >= card.trained_on["windows"]["train"]["last_ts_ms"]


def _write_csv_log(path, rows: int = 1500, seed: int = 7) -> None:
    """A small labelled transfer log with text ids, ISO times, devices: ~6% of transfers go to a few
    mule accounts, from new devices, for large amounts (fraud), the rest are ordinary."""
    import random
    from datetime import datetime, timedelta

    rng = random.Random(seed)
    start = datetime(2024, 3, 1)
    lines = ["when,from_acct,to_acct,amt,dev,fraud"]
    for i in range(rows):
        at = start + timedelta(minutes=10 * i + rng.randrange(10))
        payer = f"C{rng.randrange(150):03d}"
        if rng.random() < 0.06:
            lines.append(f"{at.isoformat()},{payer},MULE{rng.randrange(4)},{rng.uniform(800, 3000):.2f},D-new{i},yes")
        else:
            lines.append(f"{at.isoformat()},{payer},C{rng.randrange(150):03d},{rng.uniform(5, 400):.2f},D{payer},no")
    path.write_text("\n".join(lines) + "\n")


def test_train_command_from_a_csv_log_registers_a_servable_model(tmp_path, monkeypatch, capsys):
    import json

    from fraudgraph.cli import main
    from fraudgraph.models.registry import ModelRegistry

    log, mapping = tmp_path / "log.csv", tmp_path / "mapping.toml"
    _write_csv_log(log)
    mapping.write_text(
        'time_format = "iso"\nids = "first_seen"\nfraud_values = ["yes"]\nnon_fraud_values = ["no"]\n'
        'label_delay_s = 3600\n\n[columns]\ntime = "when"\nsource = "from_acct"\ntarget = "to_acct"\n'
        'amount = "amt"\ndevice = "dev"\nlabel = "fraud"\n'
    )
    monkeypatch.setenv("FRAUDGRAPH_MODEL_DIR", str(tmp_path / "models"))
    assert (
        main(
            [
                "train",
                "--source",
                "csv",
                "--csv",
                str(log),
                "--mapping",
                str(mapping),
                "--epochs",
                "3",
                "--report",
                str(tmp_path / "report.json"),
            ]
        )
        == 0
    )
    reg = ModelRegistry(tmp_path / "models")
    version = reg.current_version()
    assert version and version in capsys.readouterr().out
    model, card = reg.load(version)
    assert card.trained_on["source"] == "csv" and card.trained_on["rows"] == 1500
    assert card.trained_on["csv"] == str(log.resolve()) and card.trained_on["mapping"] == str(mapping.resolve())
    assert card.trained_on["windows"]["test"]["first_ts_ms"] >= card.trained_on["windows"]["train"]["last_ts_ms"]
    assert 0 < card.threshold <= 1 and card.metrics["test"]["n"] == 300 and card.metrics["test"]["positives"] > 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["examples"] == 1500 and report["replay"]["labels"] == sum(
        1 for line in log.read_text().splitlines() if line.endswith(",yes")
    )

    # a mapping without a label column, and a malformed row, are refused with a message, not a traceback
    unlabelled = tmp_path / "unlabelled.toml"
    unlabelled.write_text(mapping.read_text().replace('label = "fraud"\n', ""))
    with pytest.raises(SystemExit, match="no label column"):
        main(["train", "--source", "csv", "--csv", str(log), "--mapping", str(unlabelled), "--no-register"])
    bad = tmp_path / "bad.csv"
    bad.write_text(log.read_text().replace(",yes\n", ",maybe\n", 1))
    with pytest.raises(SystemExit, match=r"bad\.csv:\d+: columns\.label"):
        main(["train", "--source", "csv", "--csv", str(bad), "--mapping", str(mapping), "--no-register"])
    with pytest.raises(SystemExit, match="--csv PATH and --mapping"):
        main(["train", "--source", "csv", "--csv", str(log)])
