"""The online quality tracker: window arithmetic, late and repeated labels, eviction, and equality
with the from-scratch definition (``window_counts``) on random streams."""

import math
import random

import pytest

from fraudgraph.streams.quality import FRAUD, LEGIT, QualityTracker, Window, WindowCounts, label_of, window_counts

S = 1000  # ms


def tracker(**windows) -> QualityTracker:
    return QualityTracker(
        windows or {"1m": Window(0, 60), "10m": Window(0, 600), "2m-5m": Window(120, 300)}, bucket_s=10
    )


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
    t.decided(1_000 * S, alerted=True)
    t.decided(1_001 * S, alerted=False)
    assert t.window("1m").precision == 0.0
    assert t.labelled(1_000 * S, True, None, FRAUD)
    assert t.labelled(1_001 * S, False, None, FRAUD)
    w = t.window("1m")
    assert (w.fraud, w.fraud_alerted, w.precision, w.recall) == (2, 1, 1.0, 0.5)


def test_a_second_report_replaces_the_first_and_a_repeat_changes_nothing():
    t = tracker()
    t.decided(1_000 * S, alerted=True)
    t.labelled(1_000 * S, True, None, LEGIT)
    t.labelled(1_000 * S, True, LEGIT, FRAUD)
    t.labelled(1_000 * S, True, FRAUD, FRAUD)
    w = t.window("1m")
    assert (w.fraud, w.fraud_alerted, w.legit_labelled, w.decisions) == (1, 1, 0, 1)


def test_label_known_before_the_decision():
    t = tracker()
    t.decided(500 * S, alerted=False, label=FRAUD)
    assert t.window("1m").recall == 0.0
    t.labelled(500 * S, False, FRAUD, FRAUD)  # the same class again: no change
    assert t.window("1m").fraud == 1


def test_window_is_whole_buckets_back_from_the_watermark():
    t = tracker()
    for second in range(0, 600, 5):
        t.decided(second * S, alerted=second % 2 == 0)
    # watermark 595 s -> bucket 59; the 1m window holds buckets 54..59 = seconds 540..599
    assert t.window("1m").decisions == 12
    assert t.window("10m").decisions == 120
    # 2m-5m: buckets 30..47 = seconds 300..479
    assert t.window("2m-5m").decisions == 36


def test_windows_parse_from_settings_text():
    assert Window.parse("7d-14d") == Window(7 * 86_400, 14 * 86_400)
    assert Window.parse("0s-15m") == Window(0, 900)
    for bad in ("14d-7d", "7d", "7x-9d", "-1d-2d", "1.5d-3d"):
        with pytest.raises(ValueError):
            Window.parse(bad)


def test_old_buckets_are_evicted_and_too_old_input_is_ignored():
    t = tracker()
    t.decided(0, alerted=True, label=FRAUD)
    t.decided(2_000 * S, alerted=True)
    assert min(t.buckets) > 0 and len(t.buckets) == 1
    assert not t.decided(0, alerted=True)
    assert not t.labelled(0, True, None, FRAUD)
    assert t.window("10m").decisions == 1


def test_window_must_be_a_multiple_of_the_bucket():
    with pytest.raises(ValueError):
        QualityTracker({"odd": Window(0, 15)}, bucket_s=10)
    with pytest.raises(ValueError):
        QualityTracker({"odd": Window(5, 60)}, bucket_s=10)


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
        if t.decided(decided_ts, alerted, early):
            truth[tx] = [decided_ts, alerted, early]
        if rng.random() < 0.05 and truth:  # a late report for a recent decision
            late = rng.choice(list(truth)[-200:])
            label = label_of(rng.choice(["chargeback", "confirmed_fraud", "false_positive"]))
            if t.labelled(truth[late][0], truth[late][1], truth[late][2], label):
                truth[late][2] = label
    for name, window in t.windows.items():
        expected = window_counts(((a, b, c) for a, b, c in truth.values()), t.watermark_ms, window, t.bucket_s)
        assert t.window(name) == expected
