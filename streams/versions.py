"""Model and policy versions as Prometheus info metrics, so every dashboard can say which model and
which thresholds produced the figures it shows (and a version change is visible on the timeline)."""

from __future__ import annotations

from fraudgraph.streams import metrics


def policy_version(scorer) -> str:
    """A scorer may name its policy (``policy_version``); otherwise its thresholds are the policy."""
    named = getattr(scorer, "policy_version", None)
    if named:
        return str(named)
    thresholds = [f"{k}={getattr(scorer, k)}" for k in ("review_at", "block_at") if hasattr(scorer, k)]
    return ",".join(thresholds) or "unknown"


def publish(scorer) -> None:
    metrics.MODEL_INFO.info({"version": str(scorer.version)})
    metrics.POLICY_INFO.info({"version": policy_version(scorer)})
