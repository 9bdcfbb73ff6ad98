"""The label join from both ends, its rebuild from the tables, the scrape-time collector, and lag."""

import asyncio
from datetime import UTC, datetime
from types import SimpleNamespace

import orjson
from prometheus_client import CollectorRegistry, generate_latest

from fraudgraph.connectors.events import FraudReported, SourcePosition
from fraudgraph.streams.lag import LagReporter, partition_lag
from fraudgraph.streams.quality import QualityTracker, Window
from fraudgraph.streams.quality_join import QualityJoin, cohorts
from fraudgraph.streams.quality_metrics import QualityCollector
from fraudgraph.streams.state import Applied, NodeState

T0 = 1_700_000_000_000
DAY = 86_400_000
FRESH, REPLAYED = Applied(), Applied(replayed=1)


def early(join: QualityJoin, name: str = "early_1h"):
    return join.trackers[0].window(name)


def score(tx: int, ts_ms: int, decision: str) -> bytes:
    return orjson.dumps({"transaction_id": tx, "decision": decision, "source": {"ts_ms": ts_ms}})


def report(tx: int, kind: str, ts_ms: int = T0) -> FraudReported:
    return FraudReported(
        SourcePosition(1, None, ts_ms), report_id=tx, transaction_id=tx, kind=kind, reported_at=datetime.now(UTC)
    )


def tx_state(tx: int, label: str | None = None) -> NodeState:
    state = NodeState("Transaction", f"Transaction:{tx}", [])
    if label:
        state.attrs["label"] = label
    return state


def test_join_from_both_ends_and_rebuild_gives_the_same_windows():
    join = QualityJoin()
    scores, nodes = {}, {}
    # 1: scored, then reported. 2: reported first, then scored. 3: approved, never reported.
    scores[b"1"] = score(1, T0, "block")
    join.on_scored(1, T0, "block", {})
    nodes["Transaction:1"] = tx_state(1, "chargeback")
    join.on_applied(report(1, "chargeback"), FRESH, scores.get)
    nodes["Transaction:2"] = tx_state(2, "confirmed_fraud")
    join.on_applied(report(2, "confirmed_fraud"), FRESH, scores.get)  # no decision yet: pending
    scores[b"2"] = score(2, T0 + 1000, "approve")
    join.on_scored(2, T0 + 1000, "approve", {"Transaction:2": nodes["Transaction:2"]})
    scores[b"3"] = score(3, T0 + 2000, "approve")
    join.on_scored(3, T0 + 2000, "approve", {})
    join.on_applied(report(1, "chargeback"), REPLAYED, scores.get)  # a replay: ignored

    w = early(join)
    assert (w.decisions, w.alerts, w.fraud, w.fraud_alerted) == (3, 1, 2, 1)
    assert (w.precision, w.recall, w.false_positive_rate) == (1.0, 0.5, 0.0)

    rebuilt = QualityJoin()
    # Records another producer left on the topic are skipped, not fatal: the rest still counts.
    foreign = [(b'"4"', score(4, T0, "block")), (b"5", b"not json"), (b"6", b'{"decision": "block"}')]
    assert rebuilt.rebuild(lambda: [*scores.items(), *foreign], nodes.get) == 3
    assert early(rebuilt) == w
    assert [t.watermark_ms for t in rebuilt.trackers] == [t.watermark_ms for t in join.trackers]


def test_collector_exports_ratios_counts_and_watermark():
    tracker = QualityTracker({"1h": Window(0, 3600)}, bucket_s=10)
    tracker.decided(T0, True, "fraud")
    tracker.decided(T0, True)
    tracker.decided(T0, False, "legit")
    registry = CollectorRegistry()
    registry.register(QualityCollector([tracker]))
    text = generate_latest(registry).decode()
    assert 'fraudgraph_quality_precision_ratio{window="1h"} 0.5' in text
    assert 'fraudgraph_quality_recall_ratio{window="1h"} 1.0' in text
    assert 'fraudgraph_quality_decisions{alerted="true",label="unlabelled",window="1h"} 1.0' in text
    assert 'fraudgraph_quality_label_coverage_ratio{window="1h"} 0.6666666666666666' in text
    assert 'fraudgraph_quality_alert_rate_ratio{window="1h"} 0.6666666666666666' in text
    assert 'fraudgraph_quality_labelled_alert_precision_ratio{window="1h"} 1.0' in text
    assert 'fraudgraph_quality_window_age_seconds{edge="oldest",window="1h"} 3600.0' in text
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

    tp = lambda t, p: SimpleNamespace(topic=t, partition=p)
    reporter = LagReporter("unit", ["a"])

    async def position(x):
        return 10

    lags = asyncio.run(reporter.report([tp("a", 0), tp("a", 1), tp("changelog", 0)], lambda x: 25, position))
    assert lags == {("a", 0): 15, ("a", 1): 15}
    assert metrics.CONSUMER_LAG.labels("unit", "a", "1")._value.get() == 15
    asyncio.run(reporter.report([tp("a", 0)], lambda x: 10, position))
    samples = {
        s.labels["partition"] for m in metrics.CONSUMER_LAG.collect() for s in m.samples if s.labels["group"] == "unit"
    }
    assert samples == {"0"}


def test_a_report_applied_after_the_transaction_in_the_same_batch_still_joins():
    # The transaction's ScoringInput snapshot was taken before the report was applied.
    join = QualityJoin()
    snapshot = {"Transaction:5": tx_state(5)}  # no label on it
    join.on_applied(report(5, "confirmed_fraud"), FRESH, {}.get)  # not decided yet
    join.on_scored(5, T0, "review", snapshot)
    w = early(join)
    assert (w.fraud, w.fraud_alerted) == (1, 1) and not join.pending


def test_matured_cohorts_hold_the_labels_the_early_windows_cannot_yet():
    """Reports 3 days after the payment: the last day's window has none, the 2d-5d cohort has them."""
    join = QualityJoin(cohorts("2d-5d", "5d-10d"))
    scores = {}
    for day in range(10):
        for i in range(10):
            tx, ts = day * 100 + i, T0 + day * DAY + i * 1000
            scores[str(tx).encode()] = score(tx, ts, "block" if i < 2 else "approve")
            join.on_scored(tx, ts, "block" if i < 2 else "approve", {})
            if i in (0, 5) and day <= 6:  # reported 3 days later: only days 0..6 are reported by day 9
                join.on_applied(report(tx, "chargeback", ts + 3 * DAY), FRESH, scores.get)
    today = early(join, "early_24h")
    assert (today.decisions, today.labelled) == (10, 0) and today.recall != today.recall  # NaN: no labels yet
    recent, baseline = join.trackers[1].window("matured_recent"), join.trackers[1].window("matured_baseline")
    # recent = days 5..7 (ages 2d..5d back from day 9), baseline = days 0..4
    assert (recent.decisions, recent.fraud, recent.fraud_alerted) == (30, 4, 2)
    assert (baseline.decisions, baseline.fraud, baseline.fraud_alerted) == (50, 10, 5)
    assert baseline.recall == 0.5 and baseline.label_coverage == 0.2


def test_a_second_report_moves_the_decision_by_the_label_it_replaces():
    join = QualityJoin()
    scores = {b"1": score(1, T0, "review")}
    join.on_scored(1, T0, "review", {})
    join.on_applied(report(1, "false_positive"), FRESH, scores.get)
    assert (early(join).legit_labelled, early(join).fraud) == (1, 0)
    join.on_applied(report(1, "chargeback"), Applied(previous_label="false_positive"), scores.get)
    w = early(join)
    assert (w.legit_labelled, w.fraud, w.fraud_alerted, w.decisions) == (0, 1, 1, 1)


def test_label_lag_is_observed_once_per_label_from_either_end():
    from fraudgraph.streams import metrics

    def count():
        return next(s.value for m in metrics.LABEL_LAG.collect() for s in m.samples if s.name.endswith("_count"))

    join, before = QualityJoin(), count()
    scores = {b"1": score(1, T0, "approve")}
    join.on_scored(1, T0, "approve", {})
    join.on_applied(report(1, "chargeback", T0 + 2 * DAY), FRESH, scores.get)  # decision first
    join.on_applied(report(2, "chargeback", T0 + DAY), FRESH, scores.get)  # report first: pending
    join.on_scored(2, T0, "approve", {})
    join.on_applied(report(1, "chargeback", T0 + 2 * DAY), REPLAYED, scores.get)
    assert count() == before + 2
