"""What both sinks share: an optional wall-clock rate limit and the counts they report.

The rate is in *payment transactions per second* (inserts into ``transactions``), the unit a fraud
engine's throughput is quoted in; the other rows (logins, devices, reports...) ride along in their
natural proportions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from fraudgraph.stack.simulator.rows import TABLES, Row


@dataclass
class SinkReport:
    # table -> {"insert": n, "update": n}, every table listed (zeros included)
    rows: dict[str, dict[str, int]] = field(default_factory=lambda: {t: {"insert": 0, "update": 0} for t in TABLES})
    commits: int = 0  # source transactions (PostgreSQL commits, or Debezium txIds in Kafka mode)
    elapsed_s: float = 0.0

    def count(self, row: Row) -> None:
        self.rows[row.table][row.op] += 1

    @property
    def total(self) -> int:
        return sum(sum(ops.values()) for ops in self.rows.values())

    @property
    def transactions(self) -> int:
        return self.rows["transactions"]["insert"]


class Pacer:
    """Sleeps so that ``n`` transactions are not sent before ``n / rate`` seconds have passed."""

    def __init__(self, rate: float | None):
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive (or None for as fast as possible)")
        self.rate = rate
        self.t0 = time.monotonic()

    def batch_limit(self, batch_rows: int) -> int:
        """Transactions per batch: at most a tenth of a second's worth, so pacing stays smooth."""
        return batch_rows if self.rate is None else max(1, min(batch_rows, int(self.rate / 10)))

    def wait(self, transactions_sent: int) -> None:
        if self.rate is None:
            return
        delay = self.t0 + transactions_sent / self.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0
