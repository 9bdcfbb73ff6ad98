"""Online precision, recall and false-positive rate from late labels, over sliding event-time windows.

Definitions (the README's "Online quality" section states them for users):

* A *decision* is one transaction's score record. It is *alerted* (a predicted positive) when its
  decision is not ``approve`` (``review`` and ``block`` both reach an analyst or stop the payment).
* Its *label* comes from ``fraud_reports``, late: ``chargeback`` or ``confirmed_fraud`` -> fraud;
  ``false_positive`` -> legit (someone checked and it was fine). A transaction with no report is
  *unlabelled*, and counts as legit in the ratios: that is how fraud operations measure ("no
  chargeback = good") and the only reading under which FPR is defined before every label is in.
  The newest decisions are mostly unlabelled, so short windows understate precision and recall
  until reports arrive; the labelled/unlabelled counts say how far that goes.
* A *window* holds the decisions whose **event time** (the transaction's source commit time,
  ``source.ts_ms`` of the score record) is between ``newest_age_s`` and ``oldest_age_s`` before the
  watermark, the newest decision event time seen, counted in whole buckets of ``bucket_s``:
  bucket(t) = t // bucket_ms, and a window holds buckets ``(bucket(watermark) - oldest_age_s/bucket_s,
  bucket(watermark) - newest_age_s/bucket_s]``. Event time, not wall time, so a window means the
  same thing when the worker catches up on a backlog, replays, or runs the simulator's compressed
  days, and a test can recompute it from the topics alone (``window_counts``).
* Two kinds of window, because a bank's labels (chargebacks, confirmed-fraud reports) arrive days to
  weeks after the payment. *Early* windows end at the watermark (the last 15 min, 1 h, 24 h): they
  show volume and alert rate at once, but hold almost no labels yet, so their precision and recall
  are an early signal only. *Matured cohorts* start days back (by default decisions made 7-14 and
  30-60 days ago, settings ``quality_recent_cohort`` and ``quality_baseline_cohort``), so that most
  labels have had time to arrive: their precision and recall are the figures to judge the engine
  by, and *label coverage* (labelled / decisions) says how far to trust each.
* precision = fraud alerted / alerted; recall = fraud alerted / fraud;
  FPR = (alerted - fraud alerted) / (decisions - fraud); precision among labelled alerts = fraud
  alerted / (fraud alerted + reported-legit alerted), what an analyst queue sees. Undefined (NaN) on
  an empty denominator.

The tracker keeps one small counter vector per bucket up to the oldest window edge (the
*horizon*): memory is bounded by horizon / bucket_s whatever the traffic, so the matured cohorts use
hour buckets. A second report for the same transaction moves its decision between classes: the
join passes the label it replaces (the transaction's node state holds it), so no per-transaction
memory is needed here. Decisions older than the horizon are dropped.

It is pure and in memory. It is *rebuilt*, not persisted (``QualityJoin.rebuild``): both sides of
the join are already durable in the worker's tables (decisions in ``scores``, labels in the
transactions' node state), so re-deriving the counts from them after a restart or rebalance gives
exactly what an uninterrupted run would have, while a persisted copy would have to be kept in step
with Faust's at-least-once replays to avoid counting a replayed label twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

FRAUD, LEGIT = "fraud", "legit"
FRAUD_KINDS = frozenset({"chargeback", "confirmed_fraud"})
LEGIT_KINDS = frozenset({"false_positive"})
APPROVE = "approve"


def label_of(kind: str | None) -> str | None:
    """A fraud report's kind as a class; None for no report (or a kind we do not know)."""
    if kind in FRAUD_KINDS:
        return FRAUD
    if kind in LEGIT_KINDS:
        return LEGIT
    return None


def is_alert(decision: str) -> bool:
    return decision != APPROVE


# Counter vector slots of one bucket.
DECISIONS, ALERTS, FRAUD_N, FRAUD_ALERTED, LEGIT_N, LEGIT_ALERTED = range(6)


def _slots(alerted: bool, label: str | None) -> list[int]:
    out = [DECISIONS] + ([ALERTS] if alerted else [])
    if label == FRAUD:
        out += [FRAUD_N] + ([FRAUD_ALERTED] if alerted else [])
    elif label == LEGIT:
        out += [LEGIT_N] + ([LEGIT_ALERTED] if alerted else [])
    return out


@dataclass(frozen=True)
class WindowCounts:
    """The confusion counts of one window, and the ratios the dashboards show."""

    decisions: int = 0
    alerts: int = 0
    fraud: int = 0  # labelled fraud
    fraud_alerted: int = 0
    legit_labelled: int = 0  # reported false_positive
    legit_labelled_alerted: int = 0

    @property
    def labelled(self) -> int:
        return self.fraud + self.legit_labelled

    @property
    def unlabelled(self) -> int:
        return self.decisions - self.labelled

    @property
    def precision(self) -> float:
        return _ratio(self.fraud_alerted, self.alerts)

    @property
    def recall(self) -> float:
        return _ratio(self.fraud_alerted, self.fraud)

    @property
    def false_positive_rate(self) -> float:
        return _ratio(self.alerts - self.fraud_alerted, self.decisions - self.fraud)

    @property
    def label_coverage(self) -> float:
        return _ratio(self.labelled, self.decisions)

    @property
    def alert_rate(self) -> float:
        return _ratio(self.alerts, self.decisions)

    @property
    def labelled_alert_precision(self) -> float:
        return _ratio(self.fraud_alerted, self.fraud_alerted + self.legit_labelled_alerted)


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


@dataclass(frozen=True)
class Window:
    """Decisions made between ``newest_age_s`` and ``oldest_age_s`` before the watermark."""

    newest_age_s: int
    oldest_age_s: int

    @classmethod
    def parse(cls, text: str) -> Window:
        """``"7d-14d"`` (units s, m, h, d): decisions made 7 to 14 days before the newest one."""
        try:
            newest, oldest = (_seconds(part.strip()) for part in text.split("-"))
        except ValueError:
            raise ValueError(f"a window is '<newest age>-<oldest age>' such as '7d-14d', not {text!r}") from None
        if not 0 <= newest < oldest:
            raise ValueError(f"window {text!r}: the newest age must be below the oldest")
        return cls(newest, oldest)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def _seconds(text: str) -> int:
    if len(text) < 2 or text[-1] not in _UNITS or not text[:-1].isdigit():
        raise ValueError(text)
    return int(text[:-1]) * _UNITS[text[-1]]


@dataclass
class QualityTracker:
    windows: dict[str, Window]  # window name (a bounded label value, e.g. "early_1h") -> its ages
    bucket_s: int = 10
    watermark_ms: int | None = None
    buckets: dict[int, list[int]] = field(default_factory=dict)

    def __post_init__(self):
        for name, w in self.windows.items():
            if w.newest_age_s % self.bucket_s or w.oldest_age_s % self.bucket_s or w.oldest_age_s <= w.newest_age_s:
                raise ValueError(
                    f"window {name} ({w.newest_age_s}s-{w.oldest_age_s}s) must be whole, non-empty "
                    f"multiples of bucket_s={self.bucket_s}"
                )

    @property
    def horizon_buckets(self) -> int:
        return max(w.oldest_age_s for w in self.windows.values()) // self.bucket_s

    def _bucket(self, ts_ms: int) -> int:
        return ts_ms // (self.bucket_s * 1000)

    def _oldest_kept(self, watermark_ms: int) -> int:
        return self._bucket(watermark_ms) - self.horizon_buckets + 1

    def decided(self, ts_ms: int, alerted: bool, label: str | None = None) -> bool:
        """One new decision (with the label already known for it, if any). False if too old to count."""
        watermark = self.watermark_ms
        if watermark is None or ts_ms > watermark:
            moved = watermark is None or self._bucket(ts_ms) != self._bucket(watermark)
            self.watermark_ms = watermark = ts_ms
            if moved:
                self._evict(watermark)
        bucket = self._bucket(ts_ms)
        if bucket < self._oldest_kept(watermark):
            return False
        counts = self.buckets.setdefault(bucket, [0] * 6)
        for slot in _slots(alerted, label):
            counts[slot] += 1
        return True

    def labelled(self, ts_ms: int, alerted: bool, previous: str | None, label: str | None) -> bool:
        """A decision already counted with label ``previous`` is now labelled ``label``."""
        if self.watermark_ms is None:
            return False
        bucket = self._bucket(ts_ms)
        if bucket < self._oldest_kept(self.watermark_ms) or bucket not in self.buckets:
            return False
        if previous != label:
            counts = self.buckets[bucket]
            for slot in _slots(alerted, previous):
                counts[slot] -= 1
            for slot in _slots(alerted, label):
                counts[slot] += 1
        return True

    def window(self, name: str) -> WindowCounts:
        if self.watermark_ms is None:
            return WindowCounts()
        w = self.windows[name]
        watermark = self._bucket(self.watermark_ms)
        newest, oldest = watermark - w.newest_age_s // self.bucket_s, watermark - w.oldest_age_s // self.bucket_s + 1
        total = [0] * 6
        for bucket, counts in self.buckets.items():
            if oldest <= bucket <= newest:
                for i, n in enumerate(counts):
                    total[i] += n
        return WindowCounts(*total)

    def _evict(self, watermark_ms: int) -> None:
        oldest = self._oldest_kept(watermark_ms)
        for bucket in [b for b in self.buckets if b < oldest]:
            del self.buckets[bucket]


def window_counts(
    decisions: Iterable[tuple[int, bool, str | None]], watermark_ms: int, window: Window, bucket_s: int
) -> WindowCounts:
    """The same window computed from scratch over (event ts_ms, alerted, label) triples: the
    definition the tracker implements incrementally, for tests and offline checks."""
    bucket_ms = bucket_s * 1000
    watermark = watermark_ms // bucket_ms
    newest, oldest = watermark - window.newest_age_s // bucket_s, watermark - window.oldest_age_s // bucket_s + 1
    total = [0] * 6
    for ts_ms, alerted, label in decisions:
        if oldest <= ts_ms // bucket_ms <= newest:
            for slot in _slots(alerted, label):
                total[slot] += 1
    return WindowCounts(*total)
