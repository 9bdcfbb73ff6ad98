"""IBM AMLSim's fan-in sample as a labelled transaction log: per-account labels become per-transfer ones.

``transactions.csv`` (``sourceNodeId,targetNodeId,value,time``) reads through the generic CSV log
reader with ``mappings/amlsim.toml``; it has no label column. ``nodes.csv`` labels *accounts*:
``isFraud`` (a laundering account) and ``fraudStep``. The engine scores *transactions*, so this
module defines which transfers are laundering.

The definition, and why
-----------------------
A transfer is laundering when **both ends are laundering accounts and it is made at or after the
sender's fraudStep**.

What the data shows (checked on the shipped sample): ``fraudStep`` is set (>= 0) for exactly the
476 laundering accounts that send in a fan-in pattern, and equals the step of their first pattern
send. The other 478 laundering accounts have ``fraudStep = -1``: 183 that patterns only pay into
(the patterns' 195 receivers include 12 senders) and 295 that take part in no pattern transfer. Pattern transfers are recognisable independently by
their size: 1,854 transfers of 2.00-4.98 between laundering accounts, while every other transfer in
the file is >= 100.04. The definition labels 2,176 transfers: all 1,854 pattern-sized ones, plus
322 ordinary-sized transfers between two laundering accounts after the sender's start (the data
cannot say whether those are laundering; AMLSim's per-transaction flag is not in this sample).

Rejected alternatives: "into or out of a laundering account at or after its fraudStep" labels
5,919 transfers, two thirds of them ordinary payments to or from a laundering account (receivers
have no fraudStep, so their ordinary income would need another rule anyway); "at the sender's
fraudStep only" misses the 35 pattern transfers of senders active in two steps. The amount itself
is a feature, not ground truth, so it is used only as the check above, never as the label. (It also
means the amount alone separates pattern transfers here: a model that reads the amount will find
that; compare models, not absolute scores, on this sample.)
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fraudgraph.connectors.csv_log import IdMap, LabelOf, RejectedRow, read_csv_log
from fraudgraph.connectors.csv_log_mapping import CsvLogMapping, load_csv_log_mapping
from fraudgraph.connectors.events import DomainEvent

AMLSIM_MAPPING = Path(__file__).parent / "mappings" / "amlsim.toml"
# The shared datasets folder sits beside the clone (../shared/datasets), never inside it.
DEFAULT_AMLSIM_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "amlsim_fanin200"


@dataclass(frozen=True)
class LaunderingAccounts:
    """The laundering accounts of ``nodes.csv`` and the step each started sending (-1: never)."""

    fraud_step: dict[int, int]

    def is_laundering(self, source: int, target: int, step: int) -> bool:
        start = self.fraud_step.get(source, -1)
        return start >= 0 and step >= start and target in self.fraud_step


def load_laundering_accounts(nodes_csv: Path | str) -> LaunderingAccounts:
    fraud_step = {}
    with open(nodes_csv, newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            try:
                if int(row["isFraud"]):
                    fraud_step[int(row["nodeid"])] = int(row["fraudStep"])
            except (KeyError, TypeError, ValueError):
                raise ValueError(
                    f"{nodes_csv}:{reader.line_num}: expected integer nodeid,isFraud,fraudStep, got {row}"
                ) from None
    return LaunderingAccounts(fraud_step)


def transfer_labels(accounts: LaunderingAccounts, mapping: CsvLogMapping) -> LabelOf:
    """Labels a raw ``transactions.csv`` row by the definition above (a step-timed, integer-id log)."""
    if mapping.time_format != "step" or mapping.ids != "integer":
        raise ValueError('AMLSim labels need time_format = "step" and ids = "integer" (they read steps and node ids)')
    source, target, time = mapping.columns.source, mapping.columns.target, mapping.columns.time

    def label_of(row: dict[str, str]) -> bool:
        return accounts.is_laundering(int(row[source]), int(row[target]), int(row[time]))

    return label_of


def read_amlsim(
    directory: Path | str = DEFAULT_AMLSIM_DIR,
    mapping: CsvLogMapping | None = None,
    *,
    rejected: list[RejectedRow] | None = None,
    ids: IdMap | None = None,
) -> Iterator[DomainEvent]:
    """The sample's transfers, with a late ``FraudReported`` for each laundering one, in time order."""
    directory = Path(directory)
    mapping = mapping or load_csv_log_mapping(AMLSIM_MAPPING)
    labels = transfer_labels(load_laundering_accounts(directory / "nodes.csv"), mapping)
    return read_csv_log(directory / "transactions.csv", mapping, rejected=rejected, ids=ids, label_of=labels)
