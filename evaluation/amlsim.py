"""AMLSim fan-in laundering: the transaction-log evaluation (``evaluation/csv_log.py``: the R-GCN
against an MLP and gradient-boosted trees, replayed point-in-time, split by time, with and without
the amount) on the AMLSim sample, with the sample's own labels and analysis.

    fraudgraph evaluate amlsim [--seed 0] [--out benchmarks/results/evaluate_amlsim.json]
    python -m fraudgraph.evaluation.amlsim [--seed 0] [--out PATH] [--max-step N] [--quick] [--threads 2]
    python -m fraudgraph.evaluation.amlsim --write-labelled-csv PATH   # for `evaluate csv`

What this adds to the generic path
----------------------------------
* Labels: ``transactions.csv`` has no label column; ``connectors/amlsim.py`` joins per-account
  labels from ``nodes.csv`` (see its docstring for the per-transfer definition). The same labels
  written as a column (``--write-labelled-csv``) and read with ``mappings/amlsim_labelled.toml``
  make ``fraudgraph evaluate csv`` replay the very same events
  (benchmarks/results/evaluate_csv.md).
* A slice (``max_step``): the transfers of the first steps and the reports about them.
* Windows also named by AMLSim step (a step is one day; every transfer of a step has the same
  time, so the generic split's cuts between distinct times are cuts between whole steps).
* The analysis: in this sample the amount alone separates the pattern transfers (2.00-4.98 against
  >= 100.04 everywhere else), so "with the amount" mostly measures who finds that threshold. The
  amount alone is reported as a rule (``rules_test.amount_rule``), and recall is reported for
  pattern-sized and ordinary-sized laundering apart. Without the amount the transfer's own
  features are constant (every row is a "transfer" at a whole day), so the MLP without it is at
  chance by construction; it is the "no graph" reference.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch

from fraudgraph.connectors import events as ev
from fraudgraph.connectors.amlsim import (
    AMLSIM_MAPPING,
    DEFAULT_AMLSIM_DIR,
    load_laundering_accounts,
    read_amlsim,
    transfer_labels,
)
from fraudgraph.connectors.csv_log_mapping import EPOCH, load_csv_log_mapping
from fraudgraph.evaluation.csv_log import AMOUNT, evaluate_events
from fraudgraph.models.batch import ScoringRequest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "evaluate_amlsim.json"
PATTERN_MAX_AMOUNT = 100.0  # pattern transfers are 2.00-4.98 here, all others >= 100.04 (connectors/amlsim.py)
LABEL_COLUMN = "isLaundering"  # the column --write-labelled-csv adds (mappings/amlsim_labelled.toml)


# ---- the log ----


def load_events(directory: Path | str = DEFAULT_AMLSIM_DIR, max_step: int | None = None) -> list[ev.DomainEvent]:
    """The sample's events in event-time order; with ``max_step``, only the transfers of steps
    <= max_step and the reports about them (which arrive later, as in the full log)."""
    mapping = load_csv_log_mapping(AMLSIM_MAPPING)
    events = read_amlsim(directory, mapping)
    if max_step is None:
        return list(events)
    cutoff = _step_ms(max_step)
    # Reports come label_delay_s after their transfer and are merged in before any later
    # transfer, so once a transfer is past cutoff + delay every kept transfer's report is out.
    reports_due_by = cutoff + round(mapping.label_delay_s * 1000)
    kept: set[int] = set()
    out = []
    for e in events:
        if isinstance(e, ev.TransactionCreated):
            if e.position.ts_ms > reports_due_by:
                break
            if e.position.ts_ms > cutoff:
                continue
            kept.add(e.transaction_id)
        elif isinstance(e, ev.FraudReported) and e.transaction_id not in kept:
            continue
        out.append(e)
    return out


def write_labelled_csv(path: Path | str, directory: Path | str = DEFAULT_AMLSIM_DIR) -> int:
    """``transactions.csv`` with the per-transfer label as a column (``LABEL_COLUMN``, 1/0), for any
    reader of labelled logs (``fraudgraph evaluate csv`` with ``mappings/amlsim_labelled.toml``).
    Returns the number of laundering rows."""
    directory = Path(directory)
    label_of = transfer_labels(load_laundering_accounts(directory / "nodes.csv"), load_csv_log_mapping(AMLSIM_MAPPING))
    laundering = 0
    with open(directory / "transactions.csv", newline="") as src, open(path, "w", newline="") as dst:
        reader, writer = csv.DictReader(src), csv.writer(dst)
        assert reader.fieldnames is not None
        writer.writerow([*reader.fieldnames, LABEL_COLUMN])
        for row in reader:
            label = int(bool(label_of(row)))  # the AMLSim labeller never answers "unknown"
            laundering += label
            writer.writerow([*row.values(), label])
    return laundering


def _step_clock() -> tuple[int, int]:
    """(epoch ms of step 0, ms per step) of the AMLSim mapping."""
    m = load_csv_log_mapping(AMLSIM_MAPPING)
    return (m.step_origin - EPOCH) // timedelta(milliseconds=1), round(m.step_seconds * 1000)


def _step_ms(step: int) -> int:
    origin, per_step = _step_clock()
    return origin + step * per_step


def step_of(ts_ms: int) -> int:
    origin, per_step = _step_clock()
    return (ts_ms - origin) // per_step


# ---- the analysis ----


def _log_amount(requests: Sequence[ScoringRequest]) -> np.ndarray:
    return np.array([r.target.features[AMOUNT] for r in requests])


def size_groups(requests: Sequence[ScoringRequest]) -> dict[str, np.ndarray]:
    """For the analysis only, never a feature: the pattern transfers are the small ones (2.00-4.98;
    every other transfer is >= 100.04), the rest of the labels are ordinary-sized transfers
    between laundering accounts (connectors/amlsim.py). Recall is reported for each kind."""
    pattern = _log_amount(requests) < math.log1p(PATTERN_MAX_AMOUNT)
    return {"pattern_sized": pattern, "ordinary_sized": ~pattern}


def amount_rule(requests: Sequence[ScoringRequest]) -> dict[str, np.ndarray]:
    """The amount as the only score (lower = more suspicious): how far the amount alone goes here."""
    return {"amount_rule": -_log_amount(requests)}


def evaluate(
    seed: int = 0,
    out: str | None = None,
    source: str | None = None,
    command: str | None = None,
    max_step: int | None = None,
    quick: bool = False,
) -> dict:
    started = time.perf_counter()
    events = load_events(source or DEFAULT_AMLSIM_DIR, max_step)
    load_s = time.perf_counter() - started
    data = {
        "source": "IBM AMLSim fan-in sample (../shared/datasets/amlsim_fanin200)",
        "max_step": max_step,
        "label": "connectors/amlsim.py: both ends laundering accounts, "
        "at or after the sender's fraudStep; labels only from the replayed FraudReported events",
    }
    return evaluate_events(
        events,
        benchmark="amlsim",
        data=data,
        seed=seed,
        out=Path(out) if out else DEFAULT_OUT,
        command=command or "python -m fraudgraph.evaluation.amlsim " + " ".join(sys.argv[1:]),
        quick=quick,
        groups=size_groups,
        rules=amount_rule,
        time_fields=lambda first, last: {"first_step": step_of(first), "last_step": step_of(last)},
        load_seconds=load_s,
    )


def main(argv: list[str] | None = None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with nodes.csv and transactions.csv (default ../shared/datasets/amlsim_fanin200)",
    )
    p.add_argument(
        "--max-step", type=int, default=None, help="only the transfers of steps <= N (a slice, for smoke runs)"
    )
    p.add_argument("--quick", action="store_true", help="small training budgets (tests, smoke runs)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument(
        "--write-labelled-csv",
        metavar="PATH",
        default=None,
        help="write transactions.csv with the label as a column, for `fraudgraph evaluate csv`, and stop",
    )
    args = p.parse_args(argv)
    if args.write_labelled_csv:
        laundering = write_labelled_csv(args.write_labelled_csv, args.data_dir or DEFAULT_AMLSIM_DIR)
        print(f"wrote {args.write_labelled_csv}: {laundering} laundering transfers")
        return None
    if args.threads:
        torch.set_num_threads(args.threads)
    return evaluate(args.seed, args.out, args.data_dir, max_step=args.max_step, quick=args.quick)


if __name__ == "__main__":
    main()
