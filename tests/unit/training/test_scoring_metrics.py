"""Our ranking metrics equal scikit-learn's, including on heavy ties, and the FPR operating point
never spends more than its false-positive budget."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from fraudgraph.training.scoring_metrics import (
    auc_pr,
    auc_roc,
    recall_at_fpr,
    threshold_for_alert_rate,
    threshold_for_fpr,
)


def _sklearn_recall_at_fpr(y, s, fpr):
    f, t, _ = roc_curve(y, s, drop_intermediate=False)
    return float(t[f <= fpr].max())


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("levels", [None, 5, 2])  # continuous scores, then heavy ties
def test_metrics_match_sklearn_on_random_data(seed, levels):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 3000))
    y = rng.random(n) < rng.uniform(0.05, 0.5)
    y[:2] = [True, False]
    s = rng.normal(size=n) + 1.2 * y
    if levels is not None:
        s = np.round(s * levels / 4) / levels
    assert auc_roc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auc_pr(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    for fpr in (0.0, 0.01, 0.1, 0.5):
        assert recall_at_fpr(y, s, fpr) == pytest.approx(_sklearn_recall_at_fpr(y, s, fpr), abs=1e-12)


def test_hand_case_ties():
    # positives 0.9, 0.5 ; negatives 0.5, 0.1. Pairs: (0.9>0.5) (0.9>0.1) (0.5=0.5 -> 1/2) (0.5>0.1)
    y = [1, 1, 0, 0]
    s = [0.9, 0.5, 0.5, 0.1]
    assert auc_roc(y, s) == pytest.approx(3.5 / 4)
    # thresholds 0.9: P=1 R=1/2 ; 0.5: P=2/3 R=1 ; AP = 1/2*1 + 1/2*2/3
    assert auc_pr(y, s) == pytest.approx(0.5 + 1 / 3)
    # flagging the 0.5 tie group costs FPR 1/2: under a 1% budget only 0.9 is flagged
    assert threshold_for_fpr(y, s, 0.01) == 0.9
    assert recall_at_fpr(y, s, 0.01) == 0.5
    assert recall_at_fpr(y, s, 0.5) == 1.0


def test_all_tied_scores_are_chance():
    y = [1, 0, 1, 0, 0]
    s = [0.3] * 5
    assert auc_roc(y, s) == 0.5
    assert auc_pr(y, s) == pytest.approx(0.4)  # the positive rate
    assert recall_at_fpr(y, s, 0.5) == 0.0  # the one tie group costs FPR 1 > 0.5
    assert threshold_for_fpr(y, s, 0.5) > 0.3


def test_a_threshold_above_every_float32_score_flags_none_of_them():
    # A saturated model: the top tie group (1.0) holds negatives, so no threshold fits 1% FPR.
    y = np.array([1, 0, 0, 1] + [0] * 96)
    s = np.r_[np.ones(4), np.linspace(0.1, 0.9, 96)].astype(np.float32)
    t = threshold_for_fpr(y, s, 0.01)
    assert not (s >= t).any() and not (s.astype(np.float64) >= t).any()
    assert recall_at_fpr(y, s, 0.01) == 0.0


def test_perfect_and_reversed_ranking():
    y = np.array([0, 0, 0, 1, 1])
    s = np.arange(5.0)
    assert auc_roc(y, s) == 1.0 and auc_pr(y, s) == 1.0 and recall_at_fpr(y, s, 0.0) == 1.0
    assert auc_roc(y, -s) == 0.0 and recall_at_fpr(y, -s, 0.01) == 0.0


def test_threshold_keeps_fpr_within_budget():
    rng = np.random.default_rng(3)
    y = rng.random(5000) < 0.15
    s = np.round(rng.normal(size=5000) + y, 1)
    for fpr in (0.001, 0.01, 0.05):
        t = threshold_for_fpr(y, s, fpr)
        assert (s[~y] >= t).mean() <= fpr
        # the next lower distinct score would break the budget: t is the lowest admissible one
        lower = s[s < t].max()
        assert (s[~y] >= lower).mean() > fpr


def test_rejects_single_class_and_mismatched_lengths():
    with pytest.raises(ValueError):
        auc_roc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError):
        auc_pr([1, 0], [0.1])


# ---- threshold_for_alert_rate ----


def _flagged_share(s, t) -> float:
    return float((np.asarray(s) >= t).mean())


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("levels", [None, 3])
def test_alert_rate_threshold_is_the_lowest_within_the_rate(seed, levels):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=int(rng.integers(20, 2000)))
    if levels is not None:
        s = np.round(s * levels) / levels  # heavy ties
    for rate in (0.0, 0.001, 0.01, 0.1, 0.37, 0.5, 1.0):
        t = threshold_for_alert_rate(s, rate)
        assert _flagged_share(s, t) <= rate
        # lowest: the next lower distinct score would flag more than the rate
        lower = s[s < t]
        if lower.size:
            assert _flagged_share(s, lower.max()) > rate


def test_alert_rate_flags_a_tie_group_whole_or_not_at_all():
    s = [0.9, 0.8, 0.8, 0.8, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]
    assert threshold_for_alert_rate(s, 0.1) == 0.9  # one alert in ten
    assert threshold_for_alert_rate(s, 0.3) == 0.9  # the 0.8 group would make it four
    assert threshold_for_alert_rate(s, 0.4) == 0.8
    assert threshold_for_alert_rate(s, 0.99) == 0.8
    assert threshold_for_alert_rate(s, 1.0) == 0.1


def test_alert_rate_with_all_equal_scores_flags_all_or_nothing():
    s = np.full(50, 0.5, dtype=np.float32)
    assert threshold_for_alert_rate(s, 1.0) == 0.5
    t = threshold_for_alert_rate(s, 0.99)
    assert t > 0.5 and not (s >= t).any()  # above every score in the scores' own precision


def test_alert_rate_zero_flags_nothing_and_one_flags_everything():
    s = np.array([0.2, 0.7, 0.4, 1.0])
    assert not (s >= threshold_for_alert_rate(s, 0.0)).any()
    assert (s >= threshold_for_alert_rate(s, 1.0)).all()


@pytest.mark.parametrize(
    "scores, rate, message",
    [
        ([], 0.1, "at least one score"),
        ([0.1, float("nan")], 0.1, "finite"),
        ([0.1, float("inf")], 0.1, "finite"),
        ([0.1, 0.2], -0.01, "rate must be in"),
        ([0.1, 0.2], 1.5, "rate must be in"),
        ([0.1, 0.2], float("nan"), "rate must be in"),
    ],
)
def test_alert_rate_refuses_bad_input(scores, rate, message):
    with pytest.raises(ValueError, match=message):
        threshold_for_alert_rate(scores, rate)
