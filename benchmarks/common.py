"""What every benchmark report shares: the machine it ran on, and percentiles."""

from __future__ import annotations

from fraudgraph.machine import machine
from fraudgraph.streams.topics import delete_topics, topics_of_run

__all__ = ["delete_run_topics", "machine", "pct"]


def delete_run_topics(s) -> None:
    """Delete the topics of one benchmark run (its CDC prefix, scores topic and changelogs):
    left behind, they slow every later broker restart."""
    delete_topics(s, topics_of_run(s, s.topic_prefix + ".", s.scores_topic, s.worker_id + "-"))


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``, nearest rank."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")
