"""Joins late labels to the decisions the worker made, and feeds the ``QualityTracker``.

Either side can arrive first: labels and transactions come from different CDC topics and
partitions. So the join runs from both ends, with the worker's own durable state as the join table:

* a transaction is scored -> its label, if a report is already in, is on its node state
  (``attrs["label"]``, set by ``state.apply_event``) -> ``tracker.decided``;
* a ``FraudReported`` event is applied -> its decision, if made, is in the ``scores`` table ->
  ``tracker.labelled``; if not made yet, the first case picks the label up later. The label is
  also held here until then (``pending``): with micro-batches, a transaction's ``ScoringInput``
  is a snapshot taken at its own event, so a report applied later in the same batch is not on it.

Only fresh applications count (a replayed report touches a node that already has it), and
``rebuild`` re-derives everything from the two tables after a restart or rebalance (see
``quality.py`` for why the tracker is rebuilt rather than persisted).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Iterable

import orjson

from fraudgraph.connectors.events import FraudReported
from fraudgraph.streams import metrics
from fraudgraph.streams.quality import QualityTracker, is_alert, label_of
from fraudgraph.streams.state import NodeState, node_key

log = logging.getLogger(__name__)

# The windows the dashboards and alert rules read: bounded label values.
WINDOWS_S = {"15m": 15 * 60, "1h": 3600, "24h": 24 * 3600}
BUCKET_S = 10
KNOWN_KINDS = ("chargeback", "confirmed_fraud", "false_positive")
MAX_PENDING = 100_000  # labels waiting for their decision; the oldest go first (the node state still has them)


def _decision_of(raw: bytes) -> tuple[int, bool]:
    """(event ts_ms, alerted) of a score record."""
    record = orjson.loads(raw)
    return int(record["source"]["ts_ms"]), is_alert(record["decision"])


class QualityJoin:
    def __init__(self, tracker: QualityTracker | None = None):
        self.tracker = tracker or QualityTracker(WINDOWS_S, BUCKET_S)
        self.pending: dict[int, str | None] = {}  # transaction id -> label, reported before it was decided

    def on_scored(self, transaction_id: int, ts_ms: int, decision: str, states: dict[str, NodeState]) -> None:
        """A transaction was scored now (not a replay: the caller skips those)."""
        if transaction_id in self.pending:
            label = self.pending.pop(transaction_id)
        else:
            tx = states.get(node_key("Transaction", transaction_id))
            label = label_of(tx.attrs.get("label")) if tx is not None else None
        self.tracker.decided(transaction_id, ts_ms, is_alert(decision), label)

    def on_applied(self, event, replayed: int, score_of: Callable[[bytes], bytes | None]) -> None:
        """Any applied event; acts on fresh fraud reports."""
        if not isinstance(event, FraudReported) or replayed:
            return
        metrics.LABELS.labels(event.kind if event.kind in KNOWN_KINDS else "other").inc()
        raw = score_of(str(event.transaction_id).encode())
        if raw is None:
            metrics.LABEL_JOINS.labels("decision_pending").inc()
            self.pending.pop(event.transaction_id, None)  # re-insert: newest last
            self.pending[event.transaction_id] = label_of(event.kind)
            if len(self.pending) > MAX_PENDING:
                del self.pending[next(iter(self.pending))]
            return
        metrics.LABEL_JOINS.labels("decision_found").inc()
        ts_ms, alerted = _decision_of(raw)
        self.tracker.labelled(event.transaction_id, ts_ms, alerted, label_of(event.kind))

    def rebuild(self, scores: Iterable[tuple[bytes, bytes]], node_of: Callable[[str], NodeState | None]) -> int:
        """Start over from the tables: every score record and its transaction's label. Two passes
        over the scores (the first finds the watermark) so only decisions within the horizon need
        the node-state read. Returns the decisions counted."""
        started = time.monotonic()
        decisions, unreadable = [], 0
        for key, value in scores:
            try:
                decisions.append((int(key), *_decision_of(value)))
            except (ValueError, TypeError, KeyError):  # e.g. written by another producer: skip, count, go on
                unreadable += 1
        if unreadable:
            log.warning("quality rebuild skipped %d unreadable records of the scores table", unreadable)
        tracker = QualityTracker(self.tracker.windows_s, self.tracker.bucket_s)
        if decisions:
            newest = max(ts for _, ts, _ in decisions)
            tracker.watermark_ms = newest
            oldest_ms = (newest // (tracker.bucket_s * 1000) - tracker.horizon_buckets + 1) * tracker.bucket_s * 1000
            for tx, ts, alerted in decisions:
                if ts >= oldest_ms:
                    state = node_of(node_key("Transaction", tx))
                    tracker.decided(tx, ts, alerted, label_of(state.attrs.get("label")) if state else None)
        self.tracker = tracker
        metrics.QUALITY.tracker = tracker
        log.info("quality tracker rebuilt from %d decisions in %.2fs", len(decisions), time.monotonic() - started)
        return len(decisions)
