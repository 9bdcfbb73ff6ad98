"""The CDC topics into the pipeline: thousands of records per call, committed only once done.

Why not a Faust agent: Faust hands an agent's ``take_events`` about six events per batch through
its per-message machinery (conductor, channel, stream, ack bookkeeping), one every ~0.8 ms, and
never overlaps delivery with processing; that alone capped the worker near 1,000 events/s.
A confluent-kafka consumer returns what librdkafka has prefetched, thousands per ``consume`` call,
from a thread of its own while the event loop works.

Faust stays the application: the tables (node states, scores: their changelogs, recovery and
assignment), the query agents, the web endpoint, the lifecycle. This consumer follows Faust's
assignment: it reads the CDC partitions numbered like the ``scores`` table partitions this member
holds active (a score goes to the scores partition numbered like its CDC partition, so the
"scored" markers it must see are exactly those), from when their recovery is complete. Its
offsets are kept in a group of its own (``<worker_id>-cdc``; Faust's group has members, and
Kafka refuses commits to it from outside).

* **Commits.** A partition's offset is committed up to its first record not done: done means
  applied, decided and emitted (``Sinks.done``); records waiting for event-time order are not. The
  Faust producer is flushed first, so the table writes of what is committed are durable. A crash
  re-delivers the rest; the per-node replay guards and the scored markers skip what was applied.
* **Caught up.** A partition is caught up when the next offset to deliver (from the start offset
  on) has reached the high watermark of the consumer's last fetch: this process holds everything.
* **Backpressure.** A partition holding more than ``buffer`` events waiting for order (hours of
  event time ahead of another) is paused until it is down to half.
* **Rebalances and stops.** Before Faust's partitions are revoked the consumer stops, an in-flight
  batch finishes, what is done is committed and what waits is dropped (re-read from the commit).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable

from confluent_kafka import OFFSET_INVALID, Consumer, ConsumerGroupTopicPartitions, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from fraudgraph.kafka_config import confluent_config
from fraudgraph.settings import Settings
from fraudgraph.streams.lag import LagReporter
from fraudgraph.streams.pipeline import Pipeline, Record

log = logging.getLogger(__name__)

COMMIT_EVERY_S = 0.2
COMMIT_TIMEOUT_S = 30.0


def _log_failure(done: asyncio.Future) -> None:
    if not done.cancelled() and done.exception() is not None:
        log.warning("CDC offsets not committed (the next commit covers them): %s", done.exception())


def cdc_group(settings: Settings) -> str:
    return f"{settings.worker_id}-cdc"


class CdcConsumer:
    def __init__(self, settings: Settings, pipeline: Pipeline, topics: Iterable[str]):
        self.pipeline, self.topics, self.scores_topic = pipeline, sorted(topics), settings.scores_topic
        # A batch: what consume returns, at most batch_max records or what arrived within batch_s.
        self.batch_max, self.batch_s = settings.worker_batch_max, settings.worker_batch_ms / 1000
        self.buffer = settings.worker_order_buffer
        self.config = confluent_config(settings, **{
            "group.id": cdc_group(settings), "enable.auto.commit": False, "auto.offset.reset": "earliest",
            "enable.auto.offset.store": False, "client.id": f"{settings.worker_id}-cdc"})
        self._consumer: Consumer | None = None  # made when the app starts (it connects at once)
        self._admin: AdminClient | None = None
        self.admin_config = confluent_config(settings)
        self.group = cdc_group(settings)
        self.committing: asyncio.Future | None = None
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="cdc-consume")
        self.assigned: list[TopicPartition] = []
        self.generation = 0  # of the assignment: a consume call that spans a rebalance is dropped
        self.closed = False
        self.delivered: dict[tuple[str, int], int] = {}  # next offset per partition, as far as delivered
        self.paused: set[tuple[str, int]] = set()
        self.lock = asyncio.Lock()  # one batch at a time: consume loop, idle releases, rebalances
        self.lag = LagReporter("worker", self.topics)

    @property
    def consumer(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(self.config)
        return self._consumer

    @property
    def admin(self) -> AdminClient:
        if self._admin is None:
            self._admin = AdminClient(self.admin_config)
        return self._admin

    async def _call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.thread, fn, *args)

    # ---- assignment (driven by the Faust app) ----

    async def assign(self, active: Iterable[Any]) -> None:
        """Faust's active table partitions after a rebalance: read the CDC partitions so numbered."""
        numbers = sorted({tp.partition for tp in active if tp.topic == self.scores_topic})
        async with self.lock:
            if self.closed:
                return
            self.generation += 1
            self.assigned = [TopicPartition(t, p, OFFSET_INVALID) for t in self.topics for p in numbers]
            # From the group's commits, else the earliest offset. The start is where each partition
            # is delivered up to: a partition read to its end before is caught up at once.
            start = await self._call(self._starts, self.assigned)
            self.assigned = [TopicPartition(tp.topic, tp.partition, start[tp.topic, tp.partition]) for tp in self.assigned]
            await self._call(self.consumer.assign, self.assigned)
            self.delivered = dict(start)
            self.paused.clear()
            self.pipeline.reset()
            self.pipeline.order.assign((t, p) for t in self.topics for p in numbers)
        log.info("reading CDC partitions %s of %s", numbers, ", ".join(self.topics))

    def _starts(self, tps: list[TopicPartition]) -> dict[tuple[str, int], int]:
        out = {}
        request = [ConsumerGroupTopicPartitions(self.group, [TopicPartition(tp.topic, tp.partition) for tp in tps])]
        committed = self.admin.list_consumer_group_offsets(request, request_timeout=30)[self.group].result()
        for tp in committed.topic_partitions:
            offset = tp.offset
            if offset < 0:
                offset = self.consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=30)[0]
            out[tp.topic, tp.partition] = offset
        return out

    async def revoke(self, flush) -> None:
        """Stop reading: finish the batch in flight, commit what is done, drop what waits."""
        async with self.lock:
            if not self.assigned or self.closed:
                return
            await self._commit(flush)
            dropped = self.pipeline.reset()
            self.generation += 1
            self.assigned = []
            await self._call(self.consumer.unassign)
            self.delivered.clear()
            self.paused.clear()
        if dropped:
            log.info("rebalance: %d events waiting for event-time order will be re-read", len(dropped))

    # ---- the loop ----

    async def run(self, flush) -> None:
        """Consume, order, apply, decide, emit; commit every COMMIT_EVERY_S. ``flush`` makes the
        table writes durable (Faust's producer)."""
        loop = asyncio.get_running_loop()
        committed_at = loop.time()
        try:
            while True:
                if not self.assigned:
                    await asyncio.sleep(0.05)
                    continue
                generation = self.generation
                messages = await self._call(self.consumer.consume, self.batch_max, self.batch_s)
                async with self.lock:
                    if generation != self.generation:
                        continue  # a rebalance meanwhile: these are re-read from the commit
                    self._push(messages)
                    while await self.pipeline.drain(self._caught_up, self.batch_max):
                        pass
                    self._backpressure()
                    if loop.time() - committed_at >= COMMIT_EVERY_S:
                        committed_at = loop.time()
                        await self._commit(flush, wait=False)
                if not messages:
                    await asyncio.sleep(0)  # let the rest of the app run
        finally:  # a stop: what is done is committed, if Kafka still answers
            async with self.lock:
                try:
                    await self._commit(flush)
                finally:
                    self.assigned, self.closed = [], True
                    await self._call(self.consumer.close)
                    self.thread.shutdown(wait=False)

    def _push(self, messages: list) -> None:
        for m in messages:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("CDC consumer: %s", err)
                continue
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            self.delivered[topic, partition] = offset + 1
            self.pipeline.push(Record(topic, partition, offset, m.key(), m.value(), m.timestamp()[1], None))

    def _caught_up(self, stream: tuple[str, int]) -> bool:
        _, high = self.consumer.get_watermark_offsets(TopicPartition(*stream), cached=True)
        if high < 0:
            return False
        return self.delivered.get(stream, -1) >= high

    def _backpressure(self) -> None:
        for stream, queue in self.pipeline.order.queues.items():
            if len(queue) > self.buffer and stream not in self.paused:
                self.consumer.pause([TopicPartition(*stream)])
                self.paused.add(stream)
            elif len(queue) <= self.buffer // 2 and stream in self.paused:
                self.consumer.resume([TopicPartition(*stream)])
                self.paused.discard(stream)

    async def _commit(self, flush, wait: bool = True) -> None:
        """Commit what is done. ``wait=False`` (the loop): sent in the background, skipped while
        the previous one is still in flight; a failed one is covered by the next."""
        if self.committing is not None and not self.committing.done():
            if not wait:
                return
            await asyncio.wait([self.committing])
        offsets = self.committable()
        if not offsets:
            return
        await flush()  # the table writes of the records these offsets cover are durable first
        # Through the admin API, whose every request finds the group's coordinator afresh: a
        # consumer that only assigns can keep failing with "waiting for coordinator" after a
        # broker restart (librdkafka #2791), and scoring would wait on it.
        request = [ConsumerGroupTopicPartitions(self.group, offsets)]
        self.committing = asyncio.wrap_future(
            self.admin.alter_consumer_group_offsets(request, request_timeout=COMMIT_TIMEOUT_S)[self.group])
        self.committing.add_done_callback(_log_failure)
        if wait:
            await asyncio.wait([self.committing])

    def committable(self) -> list[TopicPartition]:
        """Per partition: its first record not done (waiting for order), else what was delivered."""
        first_waiting: dict[tuple[str, int], int] = {}
        for stream, queue in self.pipeline.order.queues.items():
            if queue:
                first_waiting[stream] = queue[0].value.record.offset
        out = []
        for stream, nxt in self.delivered.items():
            out.append(TopicPartition(*stream, first_waiting.get(stream, nxt)))
        return out

    async def report_lag(self) -> None:
        def highwater(tp):
            high = self.consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), cached=True)[1]
            return None if high < 0 else high

        async def position(tp):
            return self.delivered.get((tp.topic, tp.partition))

        await self.lag.report(list(self.assigned), highwater, position)
