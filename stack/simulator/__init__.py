"""A realistic, seeded payment workload for the bank's source database, with labelled fraud.

Layers, each usable on its own:

* ``generator.Workload(SimConfig(...))``: a pure, reproducible, time-ordered stream of ``Row``
  operations on the reference schema (``population`` -> ``behaviour`` + ``fraud``), with its
  ``GroundTruth``. The engine only ever learns the truth from the delayed ``fraud_reports`` rows.
* ``envelope.DebeziumEncoder``: the exact Debezium JSON change events for those rows.
* sinks: ``postgres_sink`` (the real CDC path) and ``kafka_sink`` (fast mode, straight to topics).
* ``simulate()``: the one call the CLI uses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from fraudgraph.settings import Settings
from fraudgraph.stack.simulator.config import SimConfig
from fraudgraph.stack.simulator.generator import Workload, generate
from fraudgraph.stack.simulator.pacing import SinkReport
from fraudgraph.stack.simulator.rows import PATTERNS, GroundTruth, Row

__all__ = ["simulate", "SimulationReport", "SimConfig", "Workload", "generate", "GroundTruth", "Row", "PATTERNS"]


@dataclass
class SimulationReport:
    mode: str
    config: SimConfig
    rows: dict[str, dict[str, int]]  # table -> {"insert": n, "update": n} as written
    fraud_by_pattern: dict[str, int]  # fraudulent transactions per pattern
    legit_transactions: int
    fraud_reports: dict[str, int]  # report kind -> count (chargeback, confirmed_fraud, false_positive)
    commits: int
    elapsed_s: float  # wall clock, generation included
    rows_per_s: float
    transactions_per_s: float  # payment transactions (inserts into `transactions`) per wall second
    truth: GroundTruth = field(repr=False)

    @property
    def total_rows(self) -> int:
        return sum(sum(ops.values()) for ops in self.rows.values())

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items() if k not in ("truth", "config")}
        out["config"] = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(self.config).items()}
        out["total_rows"] = self.total_rows
        out["fraud_fraction"] = round(self.truth.fraud_fraction, 5)
        return out


def daytime_start() -> datetime:
    """The latest 08:00 UTC that has passed: a start for runs whose volume must not depend on the
    hour they are made (activity follows the hour of day, so 4 simulated hours from 22:00 hold a
    third of the transactions of 4 hours from 08:00). Tests and benchmarks start there."""
    now = datetime.now(UTC)
    start = now.replace(hour=8, minute=0, second=0, microsecond=0)
    return start if start <= now else start - timedelta(days=1)


def simulate(
    settings: Settings,
    *,
    mode: Literal["postgres", "kafka"] = "kafka",
    customers: int = 1000,
    duration_s: float = 3600.0,
    rate: float | None = None,
    fraud_rate: float = 0.02,
    seed: int = 0,
    start: datetime | None = None,
    id_base: int | None = None,
    activity: float = 1.0,
    report_delay_s: tuple[float, float] | None = None,
    stop_at_end: bool = False,
    batch_rows: int = 200,
    progress: Callable[[SinkReport], None] | None = None,
) -> SimulationReport:
    """Generate a workload and write it: ``postgres`` into the bank database (the real CDC path),
    ``kafka`` as Debezium events straight to ``<topic_prefix>.public.<table>`` (fast mode).

    ``rate``: payment transactions per wall-clock second (None: as fast as possible).
    ``start``: simulated time of the first row (default: now, to the second).
    ``id_base``: first BIGINT id (default: above every id in the database for ``postgres``; from the
    clock for ``kafka``, so repeated runs do not overwrite each other's entities in the engine).
    """
    if mode not in ("postgres", "kafka"):
        raise ValueError(f"mode must be 'postgres' or 'kafka', not {mode!r}")
    if start is None:
        start = datetime.now(UTC).replace(microsecond=0)
    if id_base is None:
        if mode == "postgres":
            from fraudgraph.stack.simulator.postgres_sink import next_free_id_base

            id_base = next_free_id_base(settings.pg_dsn())
        else:
            id_base = int(time.time()) * 1000
    config = SimConfig(
        customers=customers,
        duration_s=duration_s,
        start=start,
        fraud_rate=fraud_rate,
        seed=seed,
        id_base=id_base,
        activity=activity,
        report_delay_s=report_delay_s,
        stop_at_end=stop_at_end,
    )
    workload = Workload(config)
    t0 = time.monotonic()
    if mode == "postgres":
        from fraudgraph.stack.simulator.postgres_sink import write_postgres

        sink = write_postgres(workload, settings.pg_dsn(), batch_rows=batch_rows, rate=rate, progress=progress)
    else:
        from fraudgraph.stack.simulator.kafka_sink import write_kafka

        sink = write_kafka(workload, settings, batch_rows=batch_rows, rate=rate, progress=progress)
    elapsed = time.monotonic() - t0
    truth = workload.truth
    reports: dict[str, int] = {}
    for kind in truth.reported.values():
        reports[kind] = reports.get(kind, 0) + 1
    if truth.false_positives:
        reports["false_positive"] = len(truth.false_positives)
    return SimulationReport(
        mode=mode,
        config=config,
        rows=sink.rows,
        fraud_by_pattern=truth.pattern_counts(),
        legit_transactions=truth.legit_transactions,
        fraud_reports=reports,
        commits=sink.commits,
        elapsed_s=round(elapsed, 3),
        rows_per_s=round(sink.total / elapsed, 1) if elapsed else 0.0,
        transactions_per_s=round(sink.transactions / elapsed, 1) if elapsed else 0.0,
        truth=truth,
    )
