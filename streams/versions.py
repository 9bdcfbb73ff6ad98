"""Model and policy versions as Prometheus info metrics, so every dashboard can say which model and
which thresholds produced the figures it shows (and a version change is visible on the timeline)."""

from __future__ import annotations

from fraudgraph.streams import metrics


def publish(model_version: str, policy_version: str) -> None:
    metrics.MODEL_INFO.info({"version": model_version})
    metrics.POLICY_INFO.info({"version": policy_version})
