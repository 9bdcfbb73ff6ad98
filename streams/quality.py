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
* A *window* of W seconds holds the decisions whose **event time** (the transaction's source commit
  time, ``source.ts_ms`` of the score record) falls in the last W seconds before the watermark, the
  newest decision event time seen, counted in whole buckets of ``bucket_s``:
  bucket(t) = t // bucket_ms, and a window holds buckets ``(bucket(watermark) - W/bucket_s,
  bucket(watermark)]``. Event time, not wall time, so a window means the same thing when the worker
  catches up on a backlog, replays, or runs the simulator's compressed hours, and a test can
  recompute it from the topics alone (``window_counts``).
* precision = fraud alerted / alerted; recall = fraud alerted / fraud;
  FPR = (alerted - fraud alerted) / (decisions - fraud). Undefined (NaN) on an empty denominator.

The tracker keeps one small counter vector per bucket up to the longest window (the *horizon*), and
the labels of labelled transactions in it (a few percent of decisions) so that a second report for
the same transaction moves it between classes instead of counting it twice. Decisions and labels
older than the horizon are dropped: they can no longer enter any window.

It is pure and in memory. It is *rebuilt*, not persisted (``QualityJoin.rebuild``): both sides of
the join are already durable in the worker's tables (decisions in ``scores``, labels in the
transactions' node state), so re-deriving the counts from them after a restart or rebalance gives
exactly what an uninterrupted run would have, while a persisted copy would have to be kept in step
with Faust's at-least-once replays to avoid counting a replayed label twice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

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


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


@dataclass
class QualityTracker:
    windows_s: dict[str, int]  # window name (a bounded label value, e.g. "1h") -> seconds
    bucket_s: int = 10
    watermark_ms: int | None = None
    buckets: dict[int, list[int]] = field(default_factory=dict)
    labels: dict[int, tuple[int, bool, str]] = field(default_factory=dict)  # tx -> (bucket, alerted, label)

    def __post_init__(self):
        for name, seconds in self.windows_s.items():
            if seconds <= 0 or seconds % self.bucket_s:
                raise ValueError(f"window {name}={seconds}s must be a positive multiple of bucket_s={self.bucket_s}")

    @property
    def horizon_buckets(self) -> int:
        return max(self.windows_s.values()) // self.bucket_s

    def _bucket(self, ts_ms: int) -> int:
        return ts_ms // (self.bucket_s * 1000)

    def _oldest_kept(self) -> int | None:
        return None if self.watermark_ms is None else self._bucket(self.watermark_ms) - self.horizon_buckets + 1

    def decided(self, transaction_id: int, ts_ms: int, alerted: bool, label: str | None = None) -> bool:
        """One new decision (with the label already known for it, if any). False if too old to count."""
        if self.watermark_ms is None or ts_ms > self.watermark_ms:
            moved = self.watermark_ms is None or self._bucket(ts_ms) != self._bucket(self.watermark_ms)
            self.watermark_ms = ts_ms
            if moved:  # eviction scans the labels: once per bucket, not per decision
                self._evict()
        bucket = self._bucket(ts_ms)
        if bucket < self._oldest_kept():
            return False
        counts = self.buckets.setdefault(bucket, [0] * 6)
        for slot in _slots(alerted, label):
            counts[slot] += 1
        if label is not None:
            self.labels[transaction_id] = (bucket, alerted, label)
        return True

    def labelled(self, transaction_id: int, ts_ms: int, alerted: bool, label: str | None) -> bool:
        """A label (new, or replacing an earlier one) for a decision already counted."""
        bucket = self._bucket(ts_ms)
        oldest = self._oldest_kept()
        if oldest is None or bucket < oldest or bucket not in self.buckets:
            return False
        previous = self.labels.get(transaction_id)
        old = previous[2] if previous else None
        if old == label:
            return True
        counts = self.buckets[bucket]
        for slot in _slots(alerted, old):
            counts[slot] -= 1
        for slot in _slots(alerted, label):
            counts[slot] += 1
        if label is None:
            self.labels.pop(transaction_id, None)
        else:
            self.labels[transaction_id] = (bucket, alerted, label)
        return True

    def window(self, name: str) -> WindowCounts:
        if self.watermark_ms is None:
            return WindowCounts()
        newest = self._bucket(self.watermark_ms)
        oldest = newest - self.windows_s[name] // self.bucket_s + 1
        total = [0] * 6
        for bucket, counts in self.buckets.items():
            if oldest <= bucket <= newest:
                for i, n in enumerate(counts):
                    total[i] += n
        return WindowCounts(*total)

    def _evict(self) -> None:
        oldest = self._oldest_kept()
        for bucket in [b for b in self.buckets if b < oldest]:
            del self.buckets[bucket]
        for tx in [t for t, (b, _, _) in self.labels.items() if b < oldest]:
            del self.labels[tx]


def window_counts(decisions: Iterable[tuple[int, bool, str | None]], watermark_ms: int, window_s: int,
                  bucket_s: int) -> WindowCounts:
    """The same window computed from scratch over (event ts_ms, alerted, label) triples: the
    definition the tracker implements incrementally, for tests and offline checks."""
    bucket_ms = bucket_s * 1000
    newest = watermark_ms // bucket_ms
    oldest = newest - window_s // bucket_s + 1
    total = [0] * 6
    for ts_ms, alerted, label in decisions:
        if oldest <= ts_ms // bucket_ms <= newest:
            for slot in _slots(alerted, label):
                total[slot] += 1
    return WindowCounts(*total)
