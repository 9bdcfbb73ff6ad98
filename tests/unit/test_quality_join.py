"""The label join from both ends, its rebuild from the tables, the scrape-time collector, and lag."""

import asyncio
from datetime import datetime, timezone
from types import SimpleNamespace

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from fraudgraph.connectors.events import FraudReported, SourcePosition
from fraudgraph.streams.lag import LagReporter, partition_lag
from fraudgraph.streams.quality import QualityTracker
from fraudgraph.streams.quality_join import QualityJoin
from fraudgraph.streams.quality_metrics import QualityCollector
from fraudgraph.streams.state import NodeState

T0 = 1_700_000_000_000


def score(tx: int, ts_ms: int, decision: str) -> bytes:
    return orjson.dumps({"transaction_id": tx, "decision": decision, "source": {"ts_ms": ts_ms}})


def report(tx: int, kind: str) -> FraudReported:
    return FraudReported(SourcePosition(1, None, T0), report_id=tx, transaction_id=tx, kind=kind,
                         reported_at=datetime.now(timezone.utc))


def tx_state(tx: int, label: str | None = None) -> NodeState:
    state = NodeState("Transaction", f"Transaction:{tx}", [])
    if label:
        state.attrs["label"] = label
    return state


def test_join_from_both_ends_and_rebuild_gives_the_same_windows():
    join = QualityJoin(QualityTracker({"1h": 3600}, bucket_s=10))
    scores, nodes = {}, {}
    # 1: scored, then reported. 2: reported first, then scored. 3: approved, never reported.
    scores[b"1"] = score(1, T0, "block")
    join.on_scored(1, T0, "block", {})
    nodes["Transaction:1"] = tx_state(1, "chargeback")
    join.on_applied(report(1, "chargeback"), 0, scores.get)
    nodes["Transaction:2"] = tx_state(2, "confirmed_fraud")
    join.on_applied(report(2, "confirmed_fraud"), 0, scores.get)  # no decision yet: pending
    scores[b"2"] = score(2, T0 + 1000, "approve")
    join.on_scored(2, T0 + 1000, "approve", {"Transaction:2": nodes["Transaction:2"]})
    scores[b"3"] = score(3, T0 + 2000, "approve")
    join.on_scored(3, T0 + 2000, "approve", {})
    join.on_applied(report(1, "chargeback"), 1, scores.get)  # a replay: ignored

    w = join.tracker.window("1h")
    assert (w.decisions, w.alerts, w.fraud, w.fraud_alerted) == (3, 1, 2, 1)
    assert (w.precision, w.recall, w.false_positive_rate) == (1.0, 0.5, 0.0)

    rebuilt = QualityJoin(QualityTracker({"1h": 3600}, bucket_s=10))
    # Records another producer left on the topic are skipped, not fatal: the rest still counts.
    foreign = [(b'"4"', score(4, T0, "block")), (b"5", b"not json"), (b"6", b'{"decision": "block"}')]
    assert rebuilt.rebuild([*scores.items(), *foreign], nodes.get) == 3
    assert rebuilt.tracker.window("1h") == w
    assert rebuilt.tracker.watermark_ms == join.tracker.watermark_ms


def test_collector_exports_ratios_counts_and_watermark():
    tracker = QualityTracker({"1h": 3600}, bucket_s=10)
    tracker.decided(1, T0, True, "fraud")
    tracker.decided(2, T0, True)
    registry = CollectorRegistry()
    registry.register(QualityCollector(tracker))
    text = generate_latest(registry).decode()
    assert 'fraudgraph_quality_precision_ratio{window="1h"} 0.5' in text
    assert 'fraudgraph_quality_recall_ratio{window="1h"} 1.0' in text
    assert 'fraudgraph_quality_decisions{alerted="true",label="unlabelled",window="1h"} 1.0' in text
    line = next(x for x in text.splitlines() if x.startswith("fraudgraph_quality_watermark_timestamp_seconds "))
    assert float(line.split()[1]) == T0 / 1000
    empty = CollectorRegistry()
    empty.register(QualityCollector())
    assert "fraudgraph_quality_precision_ratio{" not in generate_latest(empty).decode()


def test_partition_lag():
    assert partition_lag(100, 40) == 60
    assert partition_lag(100, 120) == 0  # a position past a stale high watermark is caught up
    assert partition_lag(None, 1) is None and partition_lag(5, None) is None


def test_lag_reporter_reports_its_topics_and_forgets_revoked_partitions():
    from fraudgraph.streams import metrics

    tp = lambda t, p: SimpleNamespace(topic=t, partition=p)  # noqa: E731
    reporter = LagReporter("unit", ["a"])

    async def position(x):
        return 10

    lags = asyncio.run(reporter.report([tp("a", 0), tp("a", 1), tp("changelog", 0)], lambda x: 25, position))
    assert lags == {("a", 0): 15, ("a", 1): 15}
    assert metrics.CONSUMER_LAG.labels("unit", "a", "1")._value.get() == 15
    asyncio.run(reporter.report([tp("a", 0)], lambda x: 10, position))
    samples = {s.labels["partition"] for m in metrics.CONSUMER_LAG.collect() for s in m.samples if s.labels["group"] == "unit"}
    assert samples == {"0"}


def test_a_report_applied_after_the_transaction_in_the_same_batch_still_joins():
    # The transaction's ScoringInput snapshot was taken before the report was applied.
    join = QualityJoin(QualityTracker({"1h": 3600}, bucket_s=10))
    snapshot = {"Transaction:5": tx_state(5)}  # no label on it
    join.on_applied(report(5, "confirmed_fraud"), 0, {}.get)  # not decided yet
    join.on_scored(5, T0, "review", snapshot)
    w = join.tracker.window("1h")
    assert (w.fraud, w.fraud_alerted) == (1, 1) and not join.pending
