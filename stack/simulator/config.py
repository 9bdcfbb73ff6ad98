"""The knobs of one simulation run.

Everything that changes the generated stream is in this frozen object, so ``(config)`` alone
reproduces a run row for row: same config, same rows, same ids, same timestamps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

# A fixed default start keeps a bare SimConfig() reproducible; `simulate()` defaults to "now".
DEFAULT_START = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)


@dataclass(frozen=True)
class SimConfig:
    customers: int = 1000
    duration_s: float = 3600.0
    start: datetime = DEFAULT_START
    fraud_rate: float = 0.02  # target fraction of transactions that are fraudulent
    seed: int = 0
    # Every BIGINT id is id_base + n, and device fingerprints are derived from it, so runs with
    # different bases never collide in the same database or graph.
    id_base: int = 1
    activity: float = 1.0  # multiplies every legitimate event rate (more load, same shape)
    # (min, max) seconds from a fraudulent transaction to its report; None scales to the duration.
    report_delay_s: tuple[float, float] | None = None
    report_coverage: float = 1.0  # fraction of fraudulent transactions that ever get a report
    # False: rows due after the end (status updates, late reports) are written too, so every fraud
    # keeps its label. True: the log stops at the end, as a bank's log read at that moment does.
    stop_at_end: bool = False
    false_positive_rate: float = 0.002  # fraction of legit transactions that get a false_positive report
    # Travel and recurring payments: a "day" of recurring cycles (salaries, bills) in simulated seconds.
    recurring_period_s: float = 86_400.0
    window_s: float = 60.0  # generation step; only affects memory, never the rows produced

    def __post_init__(self):
        if self.customers < 10:
            raise ValueError("customers must be at least 10 (fraud patterns need victims)")
        if self.duration_s <= 0:
            raise ValueError("duration_s must be positive")
        if not 0 <= self.fraud_rate < 0.5:
            raise ValueError("fraud_rate must be in [0, 0.5)")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        if self.report_delay_s is not None and not 0 < self.report_delay_s[0] <= self.report_delay_s[1]:
            raise ValueError("report_delay_s must be (min, max) with 0 < min <= max")

    def report_delay(self) -> tuple[float, float]:
        """Effective (min, max) report delay. In production chargebacks come days later; in a short
        run that would put every label after the end, so by default the window shrinks with the
        duration: 10 min .. 6 h for a day-long run, duration/12 .. duration/2 for shorter ones."""
        if self.report_delay_s is not None:
            return self.report_delay_s
        hi = min(6 * 3600.0, max(60.0, self.duration_s / 2))
        return min(600.0, hi / 6), hi
