"""The transaction-log evaluation (``fraudgraph evaluate csv``): unlabelled rows stay in the replay
but out of the loss and the metrics; the AMLSim sample read as a labelled CSV is the same input as
``evaluate amlsim``; every report gives the operating points."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import torch

from fraudgraph.connectors.amlsim import AMLSIM_MAPPING, DEFAULT_AMLSIM_DIR, read_amlsim
from fraudgraph.connectors.csv_log import read_csv_log
from fraudgraph.connectors.csv_log_mapping import load_csv_log_mapping
from fraudgraph.connectors.events import FraudReported
from fraudgraph.training.replay import replay
from fraudgraph.training.train import TrainConfig, train

MAPPING = (
    'time_format = "iso"\nids = "first_seen"\nfraud_values = ["yes"]\nnon_fraud_values = ["no"]\n'
    'unknown_values = ["?"]\nlabel_delay_s = 3600\n\n[columns]\ntime = "when"\nsource = "from_acct"\n'
    'target = "to_acct"\namount = "amt"\ndevice = "dev"\nlabel = "fraud"\n'
)


def write_log(path: Path, rows: int = 1500, unknown_share: float = 0.2, seed: int = 7) -> tuple[int, int]:
    """A transfer log where ~6% of transfers go to mule accounts from new devices for large amounts
    (fraud), and ``unknown_share`` of all rows carry the "not labelled" code. Returns (fraud rows,
    unknown rows)."""
    rng = random.Random(seed)
    start = datetime(2024, 3, 1)
    lines, fraud, unknown = ["when,from_acct,to_acct,amt,dev,fraud"], 0, 0
    for i in range(rows):
        at = start + timedelta(minutes=10 * i + rng.randrange(10))
        payer = f"C{rng.randrange(150):03d}"
        is_fraud = rng.random() < 0.06
        label = "yes" if is_fraud else "no"
        if rng.random() < unknown_share:
            label, unknown = "?", unknown + 1
        else:
            fraud += is_fraud
        if is_fraud:
            lines.append(
                f"{at.isoformat()},{payer},MULE{rng.randrange(4)},{rng.uniform(800, 3000):.2f},D-new{i},{label}"
            )
        else:
            lines.append(
                f"{at.isoformat()},{payer},C{rng.randrange(150):03d},{rng.uniform(5, 400):.2f},D{payer},{label}"
            )
    path.write_text("\n".join(lines) + "\n")
    return fraud, unknown


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def labelled_log(tmp_path) -> tuple[Path, Path, int, int]:
    log, mapping = tmp_path / "log.csv", tmp_path / "mapping.toml"
    fraud, unknown = write_log(log)
    mapping.write_text(MAPPING)
    return log, mapping, fraud, unknown


@pytest.mark.slow  # ~10 s: two short trainings
def test_unlabelled_examples_never_reach_the_loss_or_the_metrics(labelled_log, one_thread):
    log_path, mapping_path, fraud, unknown = labelled_log
    unlabelled: set[int] = set()
    log = replay(list(read_csv_log(log_path, load_csv_log_mapping(mapping_path), unlabelled=unlabelled)))
    labels, known = log.labelled(unlabelled)
    assert len(log.examples) == 1500 and known.count(False) == unknown == len(unlabelled)
    requests, ts = [e.request for e in log.examples], [e.ts_ms for e in log.examples]
    config = TrainConfig(epochs=3, patience=3, hidden=16)

    _, report = train(requests, labels, ts, config, known=known)
    assert report["unlabelled"] == unknown
    assert sum(report[w]["n"] + report[w]["unlabelled"] for w in ("validation", "test")) == 1500 - int(1500 * 0.6)
    assert sum(report[w]["positives"] for w in ("validation", "test")) <= fraud
    # whatever the unknown examples' labels were, nothing changes: they are masked, not zeros
    flipped = [1 if not k else y for y, k in zip(labels, known)]
    _, report_flipped = train(requests, flipped, ts, config, known=known)
    assert report_flipped["history"] == report["history"] and report_flipped["test"] == report["test"]
    # without the mask, counting them as fraud changes the training
    _, unmasked = train(requests, flipped, ts, config)
    assert unmasked["history"] != report["history"]


@pytest.mark.slow  # ~10 s: trains the R-GCN, the MLP and the trees twice on 1,500 transfers
def test_evaluate_csv_command_masks_unknown_rows_and_reports_operating_points(labelled_log, tmp_path, one_thread):
    from fraudgraph.cli import main

    log_path, mapping_path, fraud, unknown = labelled_log
    out = tmp_path / "report.json"
    assert main(["evaluate", "csv", "--csv", str(log_path), "--mapping", str(mapping_path), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["benchmark"] == "csv" and report["command"].startswith("fraudgraph evaluate csv --csv ")
    data, windows = report["data"], report["split"]["windows"]
    assert (data["transactions"], data["positives"], data["unlabelled"]) == (1500, fraud, unknown)
    assert sum(w["n"] for w in windows.values()) == 1500
    assert sum(w["unlabelled"] for w in windows.values()) == unknown
    for variant in ("with_amount", "without_amount"):
        assert set(report["results_test"][variant]) == {"rgcn", "mlp", "gbt"}
        for m in report["results_test"][variant].values():
            assert 0 <= m["recall_at_0.1pct_fpr"] <= m["recall_at_1pct_fpr"] <= 1
            assert 0 <= m["alert_rate_at_val_threshold"] <= 1 and 0 <= m["auc_roc"] <= 1
    # large transfers from new devices to mules: the models that read the amount find them
    assert report["results_test"]["with_amount"]["gbt"]["auc_roc"] > 0.9

    with pytest.raises(SystemExit, match="needs --csv PATH and --mapping"):
        main(["evaluate", "csv", "--csv", str(log_path)])
    with pytest.raises(SystemExit, match="are for `evaluate csv`, not amlsim"):
        main(["evaluate", "amlsim", "--csv", str(log_path)])
    unlabelled_mapping = tmp_path / "no_label.toml"
    unlabelled_mapping.write_text(MAPPING.replace('label = "fraud"\n', "").replace('unknown_values = ["?"]\n', ""))
    with pytest.raises(SystemExit, match="maps no label column"):
        main(["evaluate", "csv", "--csv", str(log_path), "--mapping", str(unlabelled_mapping)])


def test_the_labelled_amlsim_csv_replays_the_same_events_as_the_joined_labels(tmp_path):
    """``evaluate csv`` with mappings/amlsim_labelled.toml sees exactly what ``evaluate amlsim``
    sees; checked on the first 4,000 transfers (both label cases occur by then)."""
    if not (DEFAULT_AMLSIM_DIR / "transactions.csv").exists():
        pytest.skip("../shared/datasets/amlsim_fanin200 is not present")
    from fraudgraph.evaluation.amlsim import write_labelled_csv

    sample = tmp_path / "sample"
    sample.mkdir()
    (sample / "nodes.csv").write_text((DEFAULT_AMLSIM_DIR / "nodes.csv").read_text())
    with open(DEFAULT_AMLSIM_DIR / "transactions.csv") as fh:
        (sample / "transactions.csv").write_text("".join(line for _, line in zip(range(4001), fh)))
    labelled = tmp_path / "labelled.csv"
    laundering = write_labelled_csv(labelled, sample)
    joined = list(read_amlsim(sample))
    as_column = list(read_csv_log(labelled, load_csv_log_mapping(Path(AMLSIM_MAPPING).parent / "amlsim_labelled.toml")))
    assert as_column == joined
    assert laundering == sum(isinstance(e, FraudReported) for e in joined) > 0


def test_replay_labels_mask_the_declared_unknown_unless_a_report_says_otherwise():
    from fraudgraph.training.replay import Example, Replay

    log = Replay(examples=[Example(t, t, None) for t in (1, 2, 3)], labels={3: 1})  # type: ignore[arg-type]
    assert log.labelled({2, 3}) == ([0, 0, 1], [True, False, True])
    assert log.labelled() == ([0, 0, 1], [True, True, True])
    assert np.array_equal(np.asarray(log.labelled({1})[1]), [False, True, True])


@pytest.mark.slow  # ~6 s: two epochs on 1,500 transfers
def test_train_csv_masks_unknown_rows_and_picks_the_threshold_for_an_alert_rate(labelled_log, tmp_path, one_thread):
    """``fraudgraph train --source csv`` with a mapping's unknown_values, threshold for a 5% alert rate."""
    from fraudgraph.cli import main

    log_path, mapping_path, fraud, unknown = labelled_log
    report_path = tmp_path / "train.json"
    argv = ["train", "--source", "csv", "--csv", str(log_path), "--mapping", str(mapping_path), "--no-register"]
    argv += ["--no-recs", "--epochs", "2", "--target-alert-rate", "0.05", "--report", str(report_path)]
    assert main(argv) == 0
    report = json.loads(report_path.read_text())
    assert report["unlabelled"] == unknown and report["threshold_for"] == {"alert_rate": 0.05}
    assert 0 < report["validation"]["alert_rate_at_threshold"] <= 0.05
    for window in ("validation", "test"):
        figures = report[window]
        assert {"recall_at_0.001_fpr", "recall_at_0.01_fpr", "alert_rate_at_threshold"} <= set(figures)
    assert report["validation"]["n"] + report["validation"]["unlabelled"] == int(1500 * 0.8) - int(1500 * 0.6)


def test_train_config_refuses_an_alert_rate_outside_0_1():
    with pytest.raises(ValueError, match="target_alert_rate must be in"):
        TrainConfig(target_alert_rate=1.5)
