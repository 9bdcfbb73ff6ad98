"""Any labelled transaction log: the R-GCN against an MLP and gradient-boosted trees, replayed
point-in-time, split by time, all measured in the same run.

    fraudgraph evaluate csv --csv LOG.csv --mapping MAPPING.toml [--seed 0] [--out PATH]

This is the one evaluation path for transaction logs; ``evaluation/amlsim.py`` is this path with
the AMLSim sample's labels (joined from its accounts file) and an analysis of its own.

What is evaluated, and how
--------------------------
The log's domain events (``connectors/csv_log.py``: a ``TransactionCreated`` per row, a late
``FraudReported`` per fraud label) are replayed in event-time order through the worker's own state
code (``training/replay.py``), so every example is the transaction's scoring request exactly as the
worker would have built it, and labels come from the reports only. The examples are cut into three
windows at boundaries between distinct times (simultaneous transactions never straddle a cut), as
close as possible to 60/20/20 by count: train on the first, select on the second (epochs, and the
threshold at 1% FPR), report on the last. Rows the mapping declares unlabelled (``unknown_values``)
are replayed and cut like the others, so they shape their neighbours' features, but no model
trains on them and no metric counts them; the alert rate at the threshold does.

The three models, each on what it is meant to show:

* ``rgcn``: ``training/train.py`` ``train``, the served forward (``models/batch.py``) on the request:
  the transaction, its sender and its payee, each with its per-relation neighbour means.
* ``mlp``: ``evaluation/baselines.py`` ``train_mlp`` on the transaction's own raw features only
  (z-scored with the training window's statistics).
* ``gbt``: ``train_gbt`` on the transaction's features plus the neighbour aggregates of the same
  snapshot: each node of the request becomes a row of its own features, its per-relation neighbour
  means and log1p(neighbour count) (``state_rows``), and those rows reach the transaction through
  ``neighbour_aggregates`` (the point-in-time star, ``point_in_time_graph``). Unlike the R-GCN,
  which averages, the trees therefore also see counts (the sender's out-degree so far, ...).

Without the amount
------------------
Each model is also trained and scored *without the amount*: ``without_amount`` zeroes the
log-amount column of every transaction feature vector and of every neighbour sum over transactions
in the snapshots, which is exactly what replaying the same log with every amount 0 gives
(``log1p(0) = 0``; tested), so no feature anywhere can see an amount. What is left is structure
(who pays whom, how often) and whatever else the log maps (kind, hour, device, IP).

Every model's test figures: AUC-ROC, AUC-PR, recall at 0.1% and at 1% FPR, and the recall, FPR and
alert rate at the threshold chosen on validation.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fraudgraph.connectors import events as ev
from fraudgraph.connectors.csv_log import read_csv_log
from fraudgraph.connectors.csv_log_mapping import EPOCH, load_csv_log_mapping
from fraudgraph.evaluation.baselines import ModelRun, train_gbt, train_mlp
from fraudgraph.evaluation.yelpchi import format_table, split_metrics
from fraudgraph.machine import machine
from fraudgraph.models.batch import ScoringRequest, encode
from fraudgraph.models.features import ACCOUNT_KINDS, FEATURE_WIDTHS, TRANSACTION_KINDS
from fraudgraph.models.hetero import FRAUD_NODE_TYPES, FRAUD_RELATIONS
from fraudgraph.models.incremental import NeighbourSums, NodeState
from fraudgraph.models.rgcn import HeteroRGCN
from fraudgraph.training.replay import replay
from fraudgraph.training.scoring_metrics import auc_roc, threshold_for_fpr
from fraudgraph.training.splits import Split
from fraudgraph.training.train import TrainConfig, train
from fraudgraph.training.train import evaluate as at_threshold

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "evaluate_csv.json"
TARGET_FPR = 0.01
TRAIN_FRAC, VAL_FRAC = 0.6, 0.2
AMOUNT = 0  # column of log1p(amount) in models.features.transaction_features
# Names of the raw feature columns (models/features.py), for the trees' report.
RAW_FEATURE_NAMES = {
    "Transaction": ["log_amount", *(f"kind_{k}" for k in (*TRANSACTION_KINDS, "other")), "hour_sin", "hour_cos"],
    "Account": [f"kind_{k}" for k in (*ACCOUNT_KINDS, "other")],
    "Customer": ["one", "kyc_level"],
    "Merchant": ["one"],
    "Device": ["one"],
    "IP": ["one"],
}
assert all(len(RAW_FEATURE_NAMES[t]) == w for t, w in FEATURE_WIDTHS.items())
# Budgets: the full evaluation, and a quick one for tests and smoke runs on a slice.
FULL: dict[str, dict[str, int]] = {"rgcn": {}, "mlp": {}, "gbt": {}}
QUICK: dict[str, dict[str, int]] = {
    "rgcn": {"epochs": 4, "patience": 2},
    "mlp": {"max_epochs": 20, "patience": 5},
    "gbt": {"max_iter": 60},
}
ScoresOf = Callable[[Sequence[ScoringRequest]], dict[str, np.ndarray]]
"""From the examples' requests, per name: a score per example (``rules``: score-only references such
as "the amount alone") or a boolean per example (``groups``: recall is also reported per group)."""
TimeFields = Callable[[int, int], dict]
"""A window's first and last event time (epoch ms) in a dataset's own terms (AMLSim: its steps)."""


# ---- the split ----


def time_split(ts_ms: Sequence[int], train_frac: float = TRAIN_FRAC, val_frac: float = VAL_FRAC) -> tuple[int, int]:
    """Cut points ``a``, ``b`` (train ``[0, a)``, validation ``[a, b)``, test ``[b, n)``) of a
    time-sorted sequence, each at the boundary between two distinct times nearest to its target
    fraction, so no instant is on both sides of a cut."""
    n = len(ts_ms)
    if any(x > y for x, y in zip(ts_ms, ts_ms[1:])):
        raise ValueError("examples must be in time order")

    def cut(k: int, lo: int) -> int:
        k = min(max(k, 1), n - 1)
        left, right = bisect.bisect_left(ts_ms, ts_ms[k]), bisect.bisect_right(ts_ms, ts_ms[k])
        options = [c for c in (left, right) if lo < c < n]
        if not options:
            raise ValueError("too few distinct times for three windows")
        return min(options, key=lambda c: (abs(c - k), c))

    a = cut(int(n * train_frac), 0)
    b = cut(int(n * (train_frac + val_frac)), a)
    return a, b


def train_config_for(n: int, a: int, b: int, **overrides) -> TrainConfig:
    """``train``'s fractions that reproduce the cuts exactly (it cuts at ``int(n * frac)``)."""
    return TrainConfig(train_frac=(a + 0.5) / n, val_frac=(b - a) / n, target_fpr=TARGET_FPR, **overrides)


# ---- removing the amount ----


def without_amount(requests: Sequence[ScoringRequest]) -> list[ScoringRequest]:
    """The requests as a replay of the same log with every amount 0 would build them: the
    log-amount column is zeroed in every transaction's own features and in every neighbour sum
    over transactions (a sum of zeros). New objects; the inputs are not changed."""
    tx_width = FEATURE_WIDTHS["Transaction"]

    def strip(features: list[float]) -> list[float]:
        if len(features) != tx_width:
            raise ValueError("a transaction feature vector of the wrong width")
        return [0.0 if i == AMOUNT else v for i, v in enumerate(features)]

    def state(s) -> NodeState:
        sums = {k: strip(v) if k.startswith("Transaction:") else list(v) for k, v in s.neighbours.sums.items()}
        own = strip(s.features) if s.node_type == "Transaction" else list(s.features)
        return NodeState(s.node_type, own, NeighbourSums(dict(s.neighbours.counts), sums))

    return [
        ScoringRequest(state(r.target), {k: [state(s) for s in v] for k, v in r.neighbours.items()}) for r in requests
    ]


# ---- the baselines' inputs ----


def _incoming() -> dict[str, list]:
    out: dict[str, list] = {t: [] for t in FRAUD_NODE_TYPES}
    for rel in FRAUD_RELATIONS:
        out[rel.dst].append(rel)
    return out


def state_rows(node_type: str) -> list[str]:
    """Column names of ``state_row`` for one node type."""
    names = [f"{node_type}.{c}" for c in RAW_FEATURE_NAMES[node_type]]
    for rel in _incoming()[node_type]:
        names += [f"{node_type}<{rel.name}.mean_{c}" for c in RAW_FEATURE_NAMES[rel.src]] + [
            f"{node_type}<{rel.name}.log_count"
        ]
    return names


def state_row(s) -> list[float]:
    """A node state as one row: own raw features, then per relation into its type the mean of the
    neighbours' raw features (zeros for none) and log1p(neighbour count)."""
    row = list(s.features)
    for rel in _incoming()[s.node_type]:
        n = s.neighbours.counts.get(rel.key, 0)
        row += [v / n for v in s.neighbours.sums[rel.key]] if n else [0.0] * FEATURE_WIDTHS[rel.src]
        row.append(math.log1p(n))
    return row


def own_features(requests: Sequence[ScoringRequest]) -> Tensor:
    return torch.tensor([r.target.features for r in requests], dtype=torch.float32)


def point_in_time_graph(requests: Sequence[ScoringRequest]) -> tuple[Tensor, dict[str, Tensor], list[str]]:
    """The snapshots as one graph for ``neighbour_aggregates``: rows ``0..n-1`` are the targets,
    then one row per neighbour snapshot (a neighbour seen by two targets is two rows, at two
    versions), with an edge snapshot -> target under the relation's key. Rows share one layout of
    per-type column blocks (``state_row``; zeros in other types' blocks); columns constant over all
    rows are dropped (their aggregates would say nothing the log-degree column does not)."""
    types = sorted(
        {r.target.node_type for r in requests}
        | {s.node_type for r in requests for v in r.neighbours.values() for s in v},
        key=FRAUD_NODE_TYPES.index,
    )
    offsets, width = {}, 0
    for t in types:
        offsets[t], width = width, width + len(state_rows(t))
    rows: list[list[float]] = []

    def add(s) -> int:
        row = [0.0] * width
        values = state_row(s)
        row[offsets[s.node_type] : offsets[s.node_type] + len(values)] = values
        rows.append(row)
        return len(rows) - 1

    for r in requests:
        add(r.target)
    edges: dict[str, list[tuple[int, int]]] = {}
    for i, r in enumerate(requests):
        for key, states in r.neighbours.items():
            for s in states:
                edges.setdefault(key, []).append((add(s), i))
    x = torch.tensor(rows, dtype=torch.float32)
    names = [n for t in types for n in state_rows(t)]
    varying = (x != x[:1]).any(0) if len(x) else torch.zeros(width, dtype=torch.bool)
    edge_indices = {key: torch.tensor(e, dtype=torch.long).t().contiguous() for key, e in sorted(edges.items())}
    return x[:, varying], edge_indices, [n for n, keep in zip(names, varying.tolist()) if keep]


@torch.no_grad()
def rgcn_scores(model: HeteroRGCN, requests: Sequence[ScoringRequest], batch_size: int = 4096) -> np.ndarray:
    """Probabilities from the served forward in float32 (as ``train`` trains and selects); the
    sigmoid in float64, so confident scores do not all round to 1.0 and tie."""
    model.eval()
    out = [
        torch.sigmoid(
            model.score_batch(encode(requests[i : i + batch_size], model).to("cpu", torch.float32))[0][:, 0].double()
        ).numpy()
        for i in range(0, len(requests), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros(0)


def run_rgcn(requests, labels, known, ts, split: Split, a: int, b: int, seed: int, overrides: dict) -> ModelRun:
    started = time.perf_counter()
    config = train_config_for(len(requests), a, b, seed=seed, **overrides)
    model, report = train(requests, labels, ts, config, known=known)
    if (report["validation"]["n"], report["test"]["n"]) != (split.val.numel(), split.test.numel()):
        raise AssertionError("train() cut the windows elsewhere than time_split")
    seconds = time.perf_counter() - started
    info = {
        "config": report["config"],
        "epochs_run": report["epochs_run"],
        "best_val_auc_pr": round(max(h["val_auc_pr"] for h in report["history"]), 4),
        "encode_seconds": report["encode_seconds"],
        "train_report_test": report["test"],
    }
    return ModelRun("rgcn", rgcn_scores(model, requests), seconds, info)


def run_mlp(requests, labels, split: Split, seed: int, overrides: dict) -> ModelRun:
    x = own_features(requests)
    tr = x[split.train]
    x = (x - tr.mean(0)) / torch.where(tr.std(0) > 0, tr.std(0), torch.ones(()))  # train-window statistics only
    run = train_mlp(x, torch.tensor(labels), split, seed, **overrides)
    run.info["features"] = RAW_FEATURE_NAMES["Transaction"]
    return run


def run_gbt(requests, labels, split: Split, seed: int, overrides: dict) -> ModelRun:
    started = time.perf_counter()
    x, edge_indices, names = point_in_time_graph(requests)
    build_s = time.perf_counter() - started
    n = len(requests)
    run = train_gbt(x, edge_indices, torch.tensor(labels), split, seed, feature_names=names, **overrides)
    run.info.update(
        own_columns=names,
        relations=sorted(edge_indices),
        snapshot_rows=int(x.size(0) - n),
        build_seconds=round(build_s, 2),
    )
    return replace(run, scores=run.scores[:n], train_seconds=run.train_seconds + build_s)


def _iso(ts_ms: int) -> str:
    return (EPOCH + timedelta(milliseconds=int(ts_ms))).isoformat()


def _windows(
    y: np.ndarray, known: np.ndarray, ts: Sequence[int], a: int, b: int, time_fields: TimeFields | None
) -> dict:
    out = {}
    for name, (i, j) in (("train", (0, a)), ("validation", (a, b)), ("test", (b, len(ts)))):
        out[name] = {
            "n": j - i,
            "positives": int(y[i:j][known[i:j]].sum()),
            "unlabelled": int((~known[i:j]).sum()),
            "first_ts_ms": int(ts[i]),
            "last_ts_ms": int(ts[j - 1]),
            "first_time": _iso(ts[i]),
            "last_time": _iso(ts[j - 1]),
            "fraction": round((j - i) / len(ts), 4),
        }
        if time_fields is not None:
            out[name].update(time_fields(ts[i], ts[j - 1]))
    return out


def _measure(
    y: np.ndarray, known: np.ndarray, run: ModelRun, split: Split, b: int, groups: dict[str, np.ndarray]
) -> dict:
    """Threshold-free test figures, and the test figures at the threshold chosen on validation
    (the alert rate over every test transaction, labelled or not). Scores in float64: a "flag
    nothing" threshold is the next float64 above the top score, which a float32 comparison would
    round back down onto it."""
    run = replace(run, scores=np.asarray(run.scores, dtype=np.float64))
    val, test = split.val.numpy(), split.test.numpy()
    threshold = threshold_for_fpr(y[val], run.scores[val], TARGET_FPR)
    at = at_threshold(y[b:], run.scores[b:], threshold, TARGET_FPR, known[b:])
    caught = (run.scores[test] >= threshold) & (y[test] == 1)
    by_group = {
        name: round(float(caught[g[test]].sum() / ((y[test] == 1) & g[test]).sum()), 4)
        for name, g in groups.items()
        if ((y[test] == 1) & g[test]).any()
    }
    out = dict(
        split_metrics(y, run, test),
        val_auc_roc=round(auc_roc(y[val], run.scores[val]), 4),
        threshold=threshold,
        recall_at_val_threshold=at["recall_at_threshold"],
        fpr_at_val_threshold=at["fpr_at_threshold"],
        alert_rate_at_val_threshold=at["alert_rate_at_threshold"],
    )
    if groups:
        out["recall_at_val_threshold_by_group"] = by_group
    return out


def _compare(
    requests, labels, known, ts, split: Split, a: int, b: int, seed: int, budget: dict, groups: dict[str, np.ndarray]
) -> tuple[dict, dict, dict]:
    y = np.asarray(labels)
    runs, seconds = [], {}
    for name, fit in (
        ("mlp", lambda: run_mlp(requests, labels, split, seed, budget["mlp"])),
        ("gbt", lambda: run_gbt(requests, labels, split, seed, budget["gbt"])),
        ("rgcn", lambda: run_rgcn(requests, labels, known, ts, split, a, b, seed, budget["rgcn"])),
    ):
        started = time.perf_counter()
        runs.append(fit())
        seconds[name] = round(time.perf_counter() - started, 1)
        print(f"  {name}: {seconds[name]} s", flush=True)
    results = {r.name: _measure(y, np.asarray(known), r, split, b, groups) for r in runs}
    return results, {r.name: r.info for r in runs}, seconds


def evaluate_events(
    events: Iterable[ev.DomainEvent],
    *,
    benchmark: str,
    data: dict,
    unlabelled: Collection[int] = (),
    seed: int = 0,
    out: str | Path | None = None,
    command: str = "",
    quick: bool = False,
    groups: ScoresOf | None = None,
    rules: ScoresOf | None = None,
    time_fields: TimeFields | None = None,
    load_seconds: float | None = None,
) -> dict:
    """The evaluation of a log's events (in event-time order; ``unlabelled``: transaction ids whose
    label is unknown), written as JSON to ``out`` and returned. ``data`` describes the source in
    the report; ``groups``, ``rules`` and ``time_fields`` add a dataset's own analysis and terms;
    ``load_seconds`` is how long reading the events took, if the caller read them beforehand."""
    t0 = time.perf_counter()
    budget = QUICK if quick else FULL
    log = replay(events)
    replay_s = time.perf_counter() - t0
    print(f"replayed {log.events} events -> {len(log.examples)} examples in {replay_s:.1f} s", flush=True)
    requests = [e.request for e in log.examples]
    labels, known_list = log.labelled(unlabelled)
    ts = [e.ts_ms for e in log.examples]
    y, known = np.asarray(labels), np.asarray(known_list, dtype=bool)
    a, b = time_split(ts)
    n = len(requests)
    idx = np.arange(n)
    split = Split(*(torch.from_numpy(idx[i:j][known[i:j]]) for i, j in ((0, a), (a, b), (b, n))))
    del log
    group_masks = groups(requests) if groups else {}
    rule_scores = rules(requests) if rules else {}
    test = split.test.numpy()

    variants, info, seconds = {}, {}, {}
    for variant in ("with_amount", "without_amount"):
        print(f"{variant}:", flush=True)
        if variant == "without_amount":
            requests = without_amount(requests)
        variants[variant], info[variant], seconds[variant] = _compare(
            requests, labels, known_list, ts, split, a, b, seed, budget, group_masks
        )
        print(format_table(variants[variant]), flush=True)

    report = {
        "benchmark": benchmark,
        "command": command,
        "machine": machine("cpu"),
        "data": {
            **data,
            "transactions": n,
            "positives": int(y[known].sum()),
            "unlabelled": int((~known).sum()),
            "test_positives_by_group": {k: int((y[test] == 1)[g[test]].sum()) for k, g in group_masks.items()},
        },
        "split": {
            "by": "time",
            "whole_instants": True,
            "target_fractions": [TRAIN_FRAC, VAL_FRAC, round(1 - TRAIN_FRAC - VAL_FRAC, 4)],
            "windows": _windows(y, known, ts, a, b, time_fields),
        },
        "target_fpr": TARGET_FPR,
        "budget": "quick" if quick else "full",
        "seed": seed,
        "results_test": variants,
        "rules_test": {
            name: {
                k: v
                for k, v in _measure(y, known, ModelRun(name, s, 0.0), split, b, group_masks).items()
                if k != "train_seconds"
            }
            for name, s in rule_scores.items()
        },
        "model_info": info,
        "seconds": {
            "load": None if load_seconds is None else round(load_seconds, 1),
            "replay": round(replay_s, 1),
            "models": seconds,
            "wall": round(time.perf_counter() - t0 + (load_seconds or 0.0), 1),
        },
    }
    write_report(report, out or DEFAULT_OUT)
    return report


def write_report(report: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


def evaluate(
    csv: str | Path,
    mapping: str | Path,
    seed: int = 0,
    out: str | Path | None = None,
    command: str = "",
    quick: bool = False,
) -> dict:
    """``fraudgraph evaluate csv``: a labelled CSV log under its column mapping."""
    log_mapping = load_csv_log_mapping(mapping)
    if log_mapping.columns.label is None:
        raise ValueError(f"{mapping} maps no label column (columns.label): nothing to evaluate against")
    started = time.perf_counter()
    unlabelled: set[int] = set()
    events = list(read_csv_log(csv, log_mapping, unlabelled=unlabelled))  # fills unlabelled
    data = {"csv": str(Path(csv).resolve()), "mapping": str(Path(mapping).resolve())}
    return evaluate_events(
        events,
        benchmark="csv",
        data=data,
        unlabelled=unlabelled,
        seed=seed,
        out=out,
        command=command or f"fraudgraph evaluate csv --csv {csv} --mapping {mapping}",
        quick=quick,
        load_seconds=time.perf_counter() - started,
    )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", required=True)
    p.add_argument("--mapping", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--quick", action="store_true", help="small training budgets (tests, smoke runs)")
    args = p.parse_args(argv)
    return evaluate(args.csv, args.mapping, args.seed, args.out, quick=args.quick)


if __name__ == "__main__":
    main()
