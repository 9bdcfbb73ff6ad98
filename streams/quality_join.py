"""Joins late labels to the decisions the worker made, and feeds the ``QualityTracker``.

Either side can arrive first: labels and transactions come from different CDC topics and
partitions. So the join runs from both ends, with the worker's own durable state as the join table:

* a transaction is scored -> its label, if a report is already in, is on its node state
  (``attrs["label"]``, set by ``state.apply_event``) -> ``tracker.decided``;
* a ``FraudReported`` event is applied -> its decision, if made, is in the ``scores`` table ->
  ``tracker.labelled``; if not made yet, the first case picks the label up later. The label is
  also held here until then (``pending``): with micro-batches, a transaction's ``ScoringInput``
  is a snapshot taken at its own event, so a report applied later in the same batch is not on it.

A later report for the same transaction moves its decision between classes: the label it replaces
is the one its node state held (``Applied.previous_label``), which is what the decision was counted
with. Only fresh applications count (a replayed report touches a node that already has it), and
``rebuild`` re-derives everything from the two tables after a restart or rebalance (see
``quality.py`` for why the tracker is rebuilt rather than persisted).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator

import orjson

from fraudgraph.connectors.events import FraudReported
from fraudgraph.settings import Settings
from fraudgraph.streams import metrics
from fraudgraph.streams.quality import QualityTracker, Window, is_alert, label_of
from fraudgraph.streams.state import Applied, NodeState, node_key

log = logging.getLogger(__name__)

# The early windows (10 s buckets; they end at the watermark) are fixed label values the
# dashboards read; the matured cohorts (hour buckets) are named by role, their ages are settings.
EARLY = {"early_15m": Window(0, 15 * 60), "early_1h": Window(0, 3600), "early_24h": Window(0, 24 * 3600)}
EARLY_BUCKET_S = 10
COHORT_BUCKET_S = 3600
KNOWN_KINDS = ("chargeback", "confirmed_fraud", "false_positive")
MAX_PENDING = 100_000  # labels waiting for their decision; the oldest go first (the node state still has them)


def cohorts(recent: str, baseline: str) -> dict[str, Window]:
    return {"matured_recent": Window.parse(recent), "matured_baseline": Window.parse(baseline)}


def _decision_of(raw: bytes) -> tuple[int, bool]:
    """(event ts_ms, alerted) of a score record."""
    record = orjson.loads(raw)
    return int(record["source"]["ts_ms"]), is_alert(record["decision"])


def _observe_lag(label: str | None, label_ts_ms: int | None, decision_ts_ms: int) -> None:
    if label is not None and label_ts_ms is not None:
        metrics.LABEL_LAG.observe(max(label_ts_ms - decision_ts_ms, 0) / 1000)


class QualityJoin:
    def __init__(self, cohort_windows: dict[str, Window] | None = None):
        self.trackers = [
            QualityTracker(EARLY, EARLY_BUCKET_S),
            QualityTracker(
                cohort_windows or cohorts(Settings.quality_recent_cohort, Settings.quality_baseline_cohort),
                COHORT_BUCKET_S,
            ),
        ]
        # transaction id -> (label, report ts_ms), reported before it was decided
        self.pending: dict[int, tuple[str | None, int]] = {}

    def on_scored(self, transaction_id: int, ts_ms: int, decision: str, states: dict[str, NodeState]) -> None:
        """A transaction was scored now (not a replay: the caller skips those)."""
        label: str | None = None
        label_ts: int | None = None
        if transaction_id in self.pending:
            label, label_ts = self.pending.pop(transaction_id)
        elif (tx := states.get(node_key("Transaction", transaction_id))) is not None:
            label = label_of(tx.attrs.get("label"))
            label_ts = tx.attrs.get("label_ts_ms") if label is not None else None
        _observe_lag(label, label_ts, ts_ms)
        for tracker in self.trackers:
            tracker.decided(ts_ms, is_alert(decision), label)

    def on_applied(self, event, applied: Applied, score_of: Callable[[bytes], bytes | None]) -> None:
        """Any applied event; acts on fresh fraud reports."""
        if not isinstance(event, FraudReported) or applied.replayed:
            return
        metrics.LABELS.labels(event.kind if event.kind in KNOWN_KINDS else "other").inc()
        raw = score_of(str(event.transaction_id).encode())
        if raw is None:
            metrics.LABEL_JOINS.labels("decision_pending").inc()
            self.pending.pop(event.transaction_id, None)  # re-insert: newest last
            self.pending[event.transaction_id] = (label_of(event.kind), event.position.ts_ms)
            if len(self.pending) > MAX_PENDING:
                del self.pending[next(iter(self.pending))]
            return
        metrics.LABEL_JOINS.labels("decision_found").inc()
        ts_ms, alerted = _decision_of(raw)
        _observe_lag(label_of(event.kind), event.position.ts_ms, ts_ms)
        for tracker in self.trackers:
            tracker.labelled(ts_ms, alerted, label_of(applied.previous_label), label_of(event.kind))

    def rebuild(
        self, scores: Callable[[], Iterable[tuple[bytes, bytes]]], node_of: Callable[[str], NodeState | None]
    ) -> int:
        """Start over from the tables: every score record and its transaction's label. Two passes
        over ``scores()`` (the first finds the watermark), so memory stays that of the buckets
        however large the table, and only decisions within the horizon need the node-state read.
        Returns the decisions read."""
        started = time.monotonic()
        decisions, unreadable, newest = 0, [0], None
        for _, ts, _ in _readable(scores(), unreadable):
            decisions += 1
            newest = ts if newest is None else max(newest, ts)
        trackers = [QualityTracker(t.windows, t.bucket_s) for t in self.trackers]
        if newest is not None:
            oldest_ms = min(
                (newest // (t.bucket_s * 1000) - t.horizon_buckets + 1) * t.bucket_s * 1000 for t in trackers
            )
            for tracker in trackers:
                tracker.watermark_ms = newest
            for tx, ts, alerted in _readable(scores(), [0]):
                if ts >= oldest_ms:
                    state = node_of(node_key("Transaction", tx))
                    label = label_of(state.attrs.get("label")) if state else None
                    for tracker in trackers:
                        tracker.decided(ts, alerted, label)
        if unreadable[0]:
            log.warning("quality rebuild skipped %d unreadable score records", unreadable[0])
        self.trackers = trackers
        metrics.QUALITY.trackers = trackers
        log.info("quality tracker rebuilt from %d decisions in %.2fs", decisions, time.monotonic() - started)
        return decisions


def _readable(scores: Iterable[tuple[bytes, bytes]], unreadable: list[int]) -> Iterator[tuple[int, int, bool]]:
    """(transaction id, event ts_ms, alerted) of each score record; ``unreadable[0]`` counts the
    records another producer may have left on the topic (skipped, not fatal)."""
    for key, value in scores:
        try:
            yield (int(key), *_decision_of(value))
        except (ValueError, TypeError, KeyError):
            unreadable[0] += 1
