"""Faust's side of event-time ordering: acks, caught-up partitions, backpressure, rebalances.

* **Acks.** Faust acks a ``take_events`` batch when the agent's body returns, and commits each
  partition's offsets up to its first unacked message. An event may wait for event-time order
  beyond its batch, so every delivered message gets one more reference (``Message.incref``) that
  only the pipeline releases (``Sinks.done``), once the event is applied and decided. A crash
  therefore re-delivers what was waiting, and the per-node replay guards skip what was applied.
* **Lag.** A partition's lag is the high watermark of the consumer's last fetch minus the next offset
  to deliver: 0 means the pipeline holds everything it has; unknown (None) before the first fetch.
  The next offset is the one after the last message delivered, or, for a partition nothing was
  delivered from since the assignment, where the seek placed it (``transport.py``: nothing is
  delivered before), not the client's position, which runs ahead of what Faust has handed over. A
  lag is as old as the fetch that reported the high watermark (``learned``): the consumer leaves out
  of its next fetch a partition it still holds records of, and a fetch waits at the broker for data
  (``transport.FETCH_MAX_WAIT_MS``), so a partition can show lag 0 for a while after its next
  records reached the broker.
* **Skipped offsets.** Offsets of a partition must continue from the seek's start offset without a
  hole. A hole is counted (``fraudgraph_skipped_offsets_total``) and logged with its range: on a
  compacted topic or behind a transactional producer it is expected, on Debezium's plain topics it
  means records the client consumed and never handed over (``transport.py`` closes the two ways
  known), and the integration tests that kill workers assert it stays 0.
* **Redeliveries.** Should the client hand a record over twice in one generation (a seek back
  while a fetch was in flight), the pipeline knows the copy by its offset (``PushedOffsets``) and
  only acks it, after its original; ``fraudgraph_redelivered_events_total`` counts them.
* **Checkpoints.** Drains apply, decide and emit; a checkpoint (``Pipeline.checkpoint``) makes what
  was drained durable and acks it, every ``checkpoint_ms`` or ``checkpoint_records`` records,
  whichever comes first (the release timer covers a quiet stream), and before a rebalance or stop
  gives anything back. Scores are sent as they are decided; only the acks wait for the checkpoint.
* **Backpressure.** A partition with more than ``buffer`` events waiting (hours of event time ahead
  of another) is paused until it is down to half, so a skewed backlog is merged in bounded memory.
* **Node states.** At each assignment with CDC partitions, ``restore`` reloads the node states from
  their changelog before anything is delivered: the partitions may come from another member, which
  wrote its states at the checkpoint before it gave them up.
* **Rebalances and stops.** Faust waits for every delivered message to be acked first; the waiting
  ones are given back instead (their references dropped, unacked), and the seek to the committed
  offsets that follows re-delivers them. Messages delivered while the partitions are being revoked
  are given back the same way, and so are those fetched in an earlier generation of the group:
  ``take_events`` may still hold a batch from before the rebalance, at offsets past what was given
  back, and pushing them would apply them ahead of the records the seek brings back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from fraudgraph.streams import metrics
from fraudgraph.streams.pipeline import Pipeline, Record

log = logging.getLogger(__name__)


class OrderFlow:
    def __init__(
        self,
        app: Any,
        pipeline: Pipeline,
        topics: Iterable[str],
        batch_max: int,
        buffer: int,
        checkpoint_ms: float,
        checkpoint_records: int,
        restore: Callable[[], Awaitable[None]] | None = None,
    ):
        self.app, self.pipeline, self.topics = app, pipeline, frozenset(topics)
        self.batch_max, self.buffer = batch_max, buffer
        self.checkpoint_ms, self.checkpoint_records = checkpoint_ms, checkpoint_records
        self.checkpointed_ms = pipeline.now_ms()
        self.restore = restore  # reloads the node states the pipeline reads (an assignment)
        self.restored = asyncio.Event()  # set once the current assignment's states are loaded
        self.next_offset: dict[tuple[str, int], int] = {}  # the next offset the consumer will deliver
        self.paused: set[Any] = set()
        self.assignment: list[Any] | None = None  # the CDC partitions of the current assignment
        self.revoking = False
        self.lock = asyncio.Lock()  # one drain at a time: the agent's and the timer's
        app.flow = self
        app.on_partitions_assigned.connect(self._assigned)

    async def deliver(self, events: Iterable[Any]) -> None:
        async with self.lock:
            forgotten = 0
            for event in events:
                message = event.message
                message.incref()  # released by Sinks.done (module docstring)
                if self.revoking or message.generation_id != self.app.consumer_generation_id:
                    self._forget(message)  # from before a rebalance: the seek that follows re-delivers it
                    forgotten += 1
                    continue
                stream = (message.topic, message.partition)
                expected = self._next(stream)
                if expected is not None and message.offset > expected:
                    metrics.SKIPPED_OFFSETS.inc(message.offset - expected)
                    log.warning("%s[%s]: offsets %d-%d never delivered", *stream, expected, message.offset - 1)
                self.next_offset[stream] = message.offset + 1
                self.pipeline.push(
                    Record(
                        message.topic,
                        message.partition,
                        message.offset,
                        message.key,
                        message.value,
                        int((message.timestamp or 0) * 1000),
                        event,
                    )
                )
            if forgotten:
                log.info("rebalance: %d records fetched before it given back for re-delivery", forgotten)
            await self._drain()

    async def tick(self) -> None:
        async with self.lock:
            if self.pipeline.order.pending() or self.pipeline.undone:
                await self._drain()
            elif not self.revoking:
                self._assign()  # a partition that delivers nothing is waited for from its assignment on

    def _assign(self) -> None:
        self.pipeline.order.assign(((tp.topic, tp.partition) for tp in self._cdc_assignment()), self.pipeline.now_ms())

    async def _drain(self) -> None:
        if self.revoking:
            return
        self._assign()
        while await self.pipeline.drain(self._lag, self.batch_max, self._learned):
            if len(self.pipeline.undone) >= self.checkpoint_records:
                await self._checkpoint()
        if self.pipeline.undone and self.pipeline.now_ms() - self.checkpointed_ms >= self.checkpoint_ms:
            await self._checkpoint()
        self._backpressure()

    async def _checkpoint(self) -> None:
        await self.pipeline.checkpoint()
        self.checkpointed_ms = self.pipeline.now_ms()

    def _next(self, stream: tuple[str, int]) -> int | None:
        """The next offset ``stream`` delivers: after the last delivered, else where the seek placed it."""
        consumer = self.app.consumer
        return self.next_offset.get(stream, consumer.start_offsets.get(consumer._new_topicpartition(*stream)))

    def _lag(self, stream: tuple[str, int]) -> int | None:
        consumer = self.app.consumer
        nxt, highwater = self._next(stream), consumer.highwater(consumer._new_topicpartition(*stream))
        return None if nxt is None or highwater is None else max(highwater - nxt, 0)

    def _learned(self, stream: tuple[str, int]) -> float:
        """When the consumer last fetched ``stream`` (its lag is as of then), on the pipeline's clock."""
        fetched = self.app.consumer.fetched_ms(self.app.consumer._new_topicpartition(*stream))
        if fetched is None:
            return -math.inf
        return self.pipeline.now_ms() - (time.time() * 1000 - fetched)

    def _backpressure(self) -> None:
        consumer = self.app.consumer
        for stream, queue in self.pipeline.order.queues.items():
            tp = consumer._new_topicpartition(*stream)
            if len(queue) > self.buffer and tp not in self.paused:
                consumer.pause_partitions([tp])
                self.paused.add(tp)
            elif len(queue) <= self.buffer // 2 and tp in self.paused:
                consumer.resume_partitions([tp])
                self.paused.discard(tp)

    def _cdc_assignment(self) -> list[Any]:
        """The CDC partitions assigned, asked of the client once per assignment (the answer is a
        set built on its thread's side, too dear for every drain)."""
        if self.assignment is None:
            try:
                assignment = self.app.consumer.assignment()
            except Exception:  # noqa: BLE001 - not started yet
                return []
            cdc = [tp for tp in assignment if tp.topic in self.topics]
            if not cdc:
                return []
            self.assignment = cdc
        return self.assignment

    def _forget(self, message: Any) -> None:
        """Never acked: the seek to the committed offset after the rebalance re-delivers it."""
        self.app.consumer._unacked_messages.discard(message)

    async def give_back(self) -> None:
        async with self.lock:  # an in-flight drain finishes first
            self.revoking = True
            self.restored.clear()
            await self._checkpoint()  # what was drained is acked, not given back
            dropped = self.pipeline.reset()
            for item in dropped:
                self._forget(item.record.handle.message)
            if self.paused:
                self.app.consumer.resume_partitions(self.paused)
                self.paused.clear()
            self.next_offset.clear()
            self.assignment = None
            if dropped:
                log.info("rebalance: %d events waiting for event-time order given back for re-delivery", len(dropped))

    async def _assigned(self, sender: Any, assigned: Iterable[Any] = (), **kwargs: Any) -> None:
        async with self.lock:
            if self.restore is not None and any(tp.topic in self.topics for tp in assigned):
                await self.restore()  # before anything of the new assignment is delivered
            self.restored.set()
            self.revoking = False
            self.assignment = None
