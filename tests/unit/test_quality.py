"""The online quality tracker: window arithmetic, late and repeated labels, eviction, and equality
with the from-scratch definition (``window_counts``) on random streams."""

import math
import random

import pytest

from fraudgraph.streams.quality import FRAUD, LEGIT, QualityTracker, WindowCounts, label_of, window_counts

S = 1000  # ms


def tracker(**windows) -> QualityTracker:
    return QualityTracker(windows or {"1m": 60, "10m": 600}, bucket_s=10)


def test_labels_from_report_kinds():
    assert label_of("chargeback") == label_of("confirmed_fraud") == FRAUD
    assert label_of("false_positive") == LEGIT
    assert label_of(None) is None and label_of("something_else") is None


def test_ratios_with_unlabelled_counted_as_legit():
    w = WindowCounts(decisions=100, alerts=10, fraud=5, fraud_alerted=4, legit_labelled=2, legit_labelled_alerted=1)
    assert w.precision == 4 / 10
    assert w.recall == 4 / 5
    assert w.false_positive_rate == (10 - 4) / (100 - 5)
    assert (w.labelled, w.unlabelled) == (7, 93)


def test_empty_denominators_are_nan_not_zero():
    w = WindowCounts(decisions=3)
    assert math.isnan(w.precision) and math.isnan(w.recall)
    assert w.false_positive_rate == 0.0
    assert math.isnan(tracker().window("1m").false_positive_rate)


def test_late_label_moves_a_decision_into_the_fraud_class():
    t = tracker()
    t.decided(1, 1_000 * S, alerted=True)
    t.decided(2, 1_001 * S, alerted=False)
    assert t.window("1m").precision == 0.0
    assert t.labelled(1, 1_000 * S, True, FRAUD)
    assert t.labelled(2, 1_001 * S, False, FRAUD)
    w = t.window("1m")
    assert (w.fraud, w.fraud_alerted, w.precision, w.recall) == (2, 1, 1.0, 0.5)


def test_a_second_report_replaces_the_first_and_a_repeat_changes_nothing():
    t = tracker()
    t.decided(1, 1_000 * S, alerted=True)
    t.labelled(1, 1_000 * S, True, LEGIT)
    t.labelled(1, 1_000 * S, True, FRAUD)
    t.labelled(1, 1_000 * S, True, FRAUD)
    w = t.window("1m")
    assert (w.fraud, w.fraud_alerted, w.legit_labelled, w.decisions) == (1, 1, 0, 1)


def test_label_known_before_the_decision():
    t = tracker()
    t.decided(7, 500 * S, alerted=False, label=FRAUD)
    assert t.window("1m").recall == 0.0
    t.labelled(7, 500 * S, False, FRAUD)  # the same report seen again from the other side: no change
    assert t.window("1m").fraud == 1


def test_window_is_whole_buckets_back_from_the_watermark():
    t = tracker()
    for second in range(0, 600, 5):
        t.decided(second, second * S, alerted=second % 2 == 0)
    # watermark 595 s -> bucket 59; the 1m window holds buckets 54..59 = seconds 540..599
    assert t.window("1m").decisions == 12
    assert t.window("10m").decisions == 120


def test_old_buckets_and_their_labels_are_evicted_and_too_old_input_is_ignored():
    t = tracker()
    t.decided(1, 0, alerted=True, label=FRAUD)
    t.decided(2, 2_000 * S, alerted=True)
    assert min(t.buckets) > 0 and 1 not in t.labels
    assert not t.decided(3, 0, alerted=True)
    assert not t.labelled(1, 0, True, FRAUD)
    assert t.window("10m").decisions == 1


def test_window_must_be_a_multiple_of_the_bucket():
    with pytest.raises(ValueError):
        QualityTracker({"odd": 15}, bucket_s=10)


@pytest.mark.parametrize("seed", range(5))
def test_incremental_equals_from_scratch_on_random_streams(seed):
    rng = random.Random(seed)
    t = tracker()
    truth: dict[int, list] = {}  # tx -> [ts, alerted, label]
    ts = 10_000 * S
    for tx in range(3000):
        ts += rng.randint(0, 2 * S)
        decided_ts = ts - rng.randint(0, 30 * S)  # out of order within a bound, as across partitions
        alerted = rng.random() < 0.1
        early = label_of(rng.choice(["chargeback", "false_positive"])) if rng.random() < 0.02 else None
        if t.decided(tx, decided_ts, alerted, early):
            truth[tx] = [decided_ts, alerted, early]
        if rng.random() < 0.05 and truth:  # a late report for a recent decision
            late = rng.choice(list(truth)[-200:])
            label = label_of(rng.choice(["chargeback", "confirmed_fraud", "false_positive"]))
            if t.labelled(late, truth[late][0], truth[late][1], label):
                truth[late][2] = label
    for name, seconds in t.windows_s.items():
        expected = window_counts(((a, b, c) for a, b, c in truth.values()), t.watermark_ms, seconds, t.bucket_s)
        assert t.window(name) == expected
