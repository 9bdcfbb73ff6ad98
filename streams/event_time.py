"""Event-time order across input partitions: the live worker applies events in the order the
offline replay does, whatever order Kafka delivers them in.

Kafka orders records within a partition only. The CDC topics are many partitions of several tables,
fetched and delivered independently: in a catch-up one partition can be hours of event time ahead
of another, and a small topic (``fraud_reports``) can be drained before the transactions it labels.
State built in arrival order then differs from state built in commit order (the offline replay,
``training/replay.py``), and so do the decisions.

``EventTimeMerger`` holds one FIFO per input partition and releases, one at a time, the head with
the smallest order key (source commit time, then LSN), but only when no other partition can still
deliver an earlier one. Every other partition must have something buffered (its head is at least as
late: Debezium writes each partition in commit order), or be caught up while the candidate has
waited ``max_idle_ms`` (Kafka Streams' ``max.task.idle.ms``). Caught up means lag 0 as the client
learned it *after the candidate arrived*: a client learns a partition's end from its fetches, and
one it is not fetching right now (the consumer skips partitions it still has records of, and a
fetch in flight can wait up to its own max wait for data) would look caught up while its next
records are already on the broker. A partition that is behind (records on the broker not delivered
yet), whose lag is unknown (before its first fetch) or not known as of after the candidate's
arrival is waited for as long as it delivers: a backlog is merged exactly as the replay sorts it,
however slowly the client fetches. Only a partition that has delivered nothing for ``max_wait_ms``
(since its last record or its assignment) is treated as idle without that: a stalled fetch, or a
lag that never reaches 0 (a transactional producer's commit marker takes the last offset). Live
traffic therefore waits ``max_idle_ms`` for stragglers, plus up to one fetch of every silent
partition. An event that arrives after a later one was released is *late*: it is applied at once,
never dropped, and counted.

Items without an order key (an undecodable message, a tombstone) keep their place in their
partition's FIFO and are released as soon as they reach its head: they change no state.

Pure and clock-free: callers pass ``now`` (monotonic ms), ``lag(stream)``: records the client has
not delivered yet, 0 when caught up, None when it does not know, and ``learned(stream)``: when (same
clock) the client last learned that lag; without it every lag is taken as current (an in-memory log).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

OrderKey = tuple[int, int]  # (source commit time ms, LSN)
S = TypeVar("S", bound=Hashable)  # a stream's id; the worker's are (topic, partition)


@dataclass(slots=True)
class _Item:
    key: OrderKey | None
    arrived_ms: float
    value: Any


@dataclass
class EventTimeMerger(Generic[S]):
    max_idle_ms: float
    max_wait_ms: float = 5_000.0
    queues: dict[S, deque[_Item]] = field(default_factory=dict)
    late: int = 0  # released after a later event had been: the bound was too short for them
    _heads: list[tuple[OrderKey, int, S]] = field(default_factory=list)  # keyed heads
    _seq: int = 0  # tie-break for equal keys: first come, first out
    _released: OrderKey | None = None  # the newest key released so far
    _progress_ms: dict[S, float] = field(default_factory=dict)  # a stream's last record, or assignment

    def assign(self, streams: Iterable[S], now_ms: float) -> None:
        """The input partitions to wait on (others pushed later are added as they appear)."""
        for s in streams:
            self.queues.setdefault(s, deque())
            self._progress_ms.setdefault(s, now_ms)

    def clear(self) -> list[Any]:
        """Forget everything buffered (a rebalance: the client re-delivers it); returns it."""
        dropped = [item.value for q in self.queues.values() for item in q]
        self.queues.clear()
        self._heads.clear()
        self._progress_ms.clear()
        self._released = None  # what comes back was never released: not late
        return dropped

    def pending(self, stream: S | None = None) -> int:
        if stream is not None:
            return len(self.queues.get(stream, ()))
        return sum(len(q) for q in self.queues.values())

    def push(self, stream: S, key: OrderKey | None, value: Any, now_ms: float) -> None:
        queue = self.queues.setdefault(stream, deque())
        queue.append(_Item(key, now_ms, value))
        self._progress_ms[stream] = now_ms
        if len(queue) == 1:
            self._push_head(stream, queue[0])

    def _push_head(self, stream: S, item: _Item) -> None:
        if item.key is not None:
            self._seq += 1
            heapq.heappush(self._heads, (item.key, self._seq, stream))

    def pop_ready(
        self,
        now_ms: float,
        lag: Callable[[S], int | None],
        limit: int | None = None,
        learned: Callable[[S], float] | None = None,
    ) -> list[Any]:
        """The items that may be applied now (at most about ``limit``), in order."""
        out: list[Any] = []
        self._unkeyed_heads(out)
        lags: dict[S, tuple[int | None, float]] = {}  # (lag, learned at): asked once per call

        def may_pass(other: S, arrived: float) -> bool:
            """Whether the silent ``other`` no longer holds a head that arrived at ``arrived``."""
            if now_ms - arrived < self.max_idle_ms:
                return False
            if other not in lags:
                lags[other] = (lag(other), now_ms if learned is None else learned(other))
            behind, learned_at = lags[other]
            if behind == 0 and learned_at >= arrived:
                return True
            return now_ms - self._progress_ms.setdefault(other, now_ms) >= self.max_wait_ms

        while self._heads and (limit is None or len(out) < limit):
            key, _, stream = self._heads[0]
            queue = self.queues[stream]
            arrived = queue[0].arrived_ms
            for other, q in self.queues.items():
                if not q and other != stream and not may_pass(other, arrived):
                    return out
            heapq.heappop(self._heads)
            item = queue.popleft()
            if self._released is not None and key < self._released:
                self.late += 1
            else:
                self._released = key
            out.append(item.value)
            if queue:
                self._push_head(stream, queue[0])
                self._unkeyed_heads(out, stream)
        return out

    def _unkeyed_heads(self, out: list[Any], only: S | None = None) -> None:
        """Release keyless items at the head of ``only`` (or of every stream)."""
        for stream in [only] if only is not None else list(self.queues):
            queue = self.queues[stream]
            released = False
            while queue and queue[0].key is None:
                out.append(queue.popleft().value)
                released = True
            if released and queue:
                self._push_head(stream, queue[0])
