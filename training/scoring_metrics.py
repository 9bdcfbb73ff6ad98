"""Ranking metrics for fraud scores: AUC-ROC, AUC-PR (average precision), recall at a fixed FPR,
and the thresholds of two operating points (a target FPR, a target alert rate).

Pure numpy so the evaluation, the trainer and the tests share one definition without pulling
scikit-learn into serving code; the unit tests pin these to scikit-learn's numbers.

Ties are the subtle part. A scorer that gives many nodes the same value (a tree, a saturated
sigmoid) must not be credited for an arbitrary order among them, so every metric here moves in
steps of whole tie groups:

* ``auc_roc`` is the Mann-Whitney statistic with average ranks (a tied positive/negative pair
  counts one half), which equals the trapezoidal area under the ROC curve.
* ``auc_pr`` is average precision as scikit-learn defines it: sum over distinct thresholds of
  (recall step) * precision, no interpolation.
* ``threshold_for_fpr`` / ``recall_at_fpr`` only flag with thresholds at distinct score values
  ("flag s >= t"), so the achieved FPR never exceeds the target just because a tie group was split.
"""

from __future__ import annotations

import numpy as np


def _as_arrays(y, s) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(bool).ravel()
    s = np.asarray(s, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} differ in length")
    if y.all() or not y.any():
        raise ValueError("need at least one positive and one negative label")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y, s


def _curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative true and false positives when flagging ``s >= t``, one entry per distinct score
    ``t`` from the highest down (so a tie group enters or leaves together)."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(y)[last_of_group]
    fps = (last_of_group + 1) - tps
    return tps, fps, s[last_of_group]


def auc_roc(y, s) -> float:
    """Probability that a random positive scores above a random negative (ties count one half)."""
    y, s = _as_arrays(y, s)
    tps, fps, _ = _curve(y, s)
    tpr = np.r_[0.0, tps / tps[-1]]
    fpr = np.r_[0.0, fps / fps[-1]]
    return float(np.trapezoid(tpr, fpr))


def auc_pr(y, s) -> float:
    """Average precision: sum_k (R_k - R_{k-1}) * P_k over distinct thresholds (scikit-learn's
    ``average_precision_score``). Chance level is the positive rate, not 0.5."""
    y, s = _as_arrays(y, s)
    tps, fps, _ = _curve(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def threshold_for_fpr(y, s, fpr: float = 0.01) -> float:
    """The lowest score threshold ``t`` such that flagging ``s >= t`` has false-positive rate <= ``fpr``
    on (``y``, ``s``). Lowest, so recall is as high as the FPR budget allows. If even the top tie
    group exceeds the budget, returns a value above every score (flag nothing)."""
    dtype = np.asarray(s).dtype
    y, s = _as_arrays(y, s)
    if not 0.0 <= fpr <= 1.0:
        raise ValueError("fpr must be in [0, 1]")
    tps, fps, thresholds = _curve(y, s)
    ok = np.flatnonzero(fps / fps[-1] <= fpr)
    if ok.size == 0:
        # "Above every score" in the scores' own precision: the next float64 above a float32 score
        # rounds back to that score when float32 scores are compared with it (NumPy casts the
        # Python float to the array's type), which flagged the whole top tie group, e.g. every
        # score saturated at 1.0.
        top = thresholds[0].astype(dtype) if np.issubdtype(dtype, np.floating) else thresholds[0]
        return float(np.nextafter(top, np.array(np.inf, dtype=top.dtype)))
    return float(thresholds[ok[-1]])


def recall_at_fpr(y, s, fpr: float = 0.01) -> float:
    """True-positive rate at the operating point ``threshold_for_fpr(y, s, fpr)``: what share of
    fraud a reviewer catches if at most ``fpr`` of legitimate cases may be flagged."""
    y, s = _as_arrays(y, s)
    t = threshold_for_fpr(y, s, fpr)
    return float((s[y] >= t).mean())


def threshold_for_alert_rate(s, rate: float) -> float:
    """The lowest score threshold ``t`` such that flagging ``s >= t`` flags at most ``rate`` of all
    scored transactions (labelled or not): the operating point of a review team that can look at a
    fixed share of traffic, whatever the labels say. Thresholds sit at distinct score values, so a
    tie group is flagged whole or not at all; if even the top group is more than ``rate``, returns
    a value above every score (flag nothing). Needs no labels, so it also reads unlabelled logs."""
    dtype = np.asarray(s).dtype
    s = np.asarray(s, dtype=np.float64).ravel()
    if s.size == 0:
        raise ValueError("need at least one score")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    if not 0.0 <= rate <= 1.0:  # also refuses NaN
        raise ValueError(f"rate must be in [0, 1], got {rate!r}")
    values, counts = np.unique(s, return_counts=True)  # ascending
    flagged = np.cumsum(counts[::-1])[::-1]  # flagged[i]: how many s >= values[i]
    ok = np.flatnonzero(flagged / s.size <= rate)  # a share, as the caller wrote it: 29 / 100 == 0.29
    if ok.size == 0:
        top = values[-1].astype(dtype) if np.issubdtype(dtype, np.floating) else values[-1]
        return float(np.nextafter(top, np.array(np.inf, dtype=np.asarray(top).dtype)))
    return float(values[ok[0]])
