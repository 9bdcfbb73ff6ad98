"""Consumer lag per topic-partition: the high watermark minus the consumer's position.

Computed in-process from the consumers' own view (no admin requests): the position is where the
consumer will read next, and the high watermark is the one the broker reported with the last fetch
response, so the figure is as fresh as the last fetch and costs nothing to read. Only the topics a
consumer processes are reported.
Series of partitions no longer assigned are removed, so a rebalance leaves no stale lag behind.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fraudgraph.streams import metrics


def partition_lag(highwater: int | None, position: int | None) -> int | None:
    if highwater is None or position is None or highwater < 0 or position < 0:
        return None
    return max(highwater - position, 0)


class LagReporter:
    """Sets ``fraudgraph_consumer_lag_messages{group=...}`` for one consumer's partitions."""

    def __init__(self, group: str, topics: Iterable[str]):
        self.group, self.topics = group, set(topics)
        self._reported: set[tuple[str, str]] = set()

    async def report(
        self,
        assignment: Iterable[Any],
        highwater: Callable[[Any], int | None],
        position: Callable[[Any], Awaitable[int | None]],
    ) -> dict[tuple[str, int], int]:
        """``assignment``: TopicPartitions (anything with .topic and .partition)."""
        lags = {}
        for tp in assignment:
            if tp.topic not in self.topics:
                continue
            lag = partition_lag(highwater(tp), await position(tp))
            if lag is not None:
                lags[(tp.topic, tp.partition)] = lag
        current = {(t, str(p)) for t, p in lags}
        for topic, partition in self._reported - current:
            metrics.CONSUMER_LAG.remove(self.group, topic, partition)
        for (topic, partition), lag in lags.items():
            metrics.CONSUMER_LAG.labels(self.group, topic, str(partition)).set(lag)
        self._reported = current
        return lags
