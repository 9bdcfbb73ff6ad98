"""The CDC loop: librdkafka batches in, one Kafka transaction out per checkpoint.

    consume(up to thousands of records) -> Pipeline.push (decode, event-time order)
        -> Pipeline.drain (apply, decide, emit into the open transaction)
        -> every ``checkpoint_ms`` or ``checkpoint_records``: Pipeline.checkpoint (the node states
           changed since the last one, once each) and the input offsets of every record done
           (``send_offsets_to_transaction``), then ``commit_transaction``

Why librdkafka and not a Faust agent: Faust hands an agent a few events at a time through several
layers of Python per message, and its tables write each state through aiokafka and RocksDB; the
worker's event loop spent most of its time there (py-spy, ``benchmarks/results/performance.md``).
Faust stays the application (the web endpoint, the query agents, the lifecycle); this loop is one
of its services.

**Exactly once.** The scores, alerts and dead letters of a checkpoint, its node states and its
input offsets are one Kafka transaction (KIP-98; offsets fenced by the group generation, KIP-447):
after a crash, a restart restores the node states and scores as of the last commit (read
committed) and re-reads from that commit's offsets, so the same events are decided again from the
same states, and what the crashed process had sent is aborted, invisible to read-committed
consumers. Readers of ``fraud.scores`` and ``fraud.alerts`` must use ``isolation.level =
read_committed`` (librdkafka's default; the Java client's default is read_uncommitted).

**Rebalances.** librdkafka runs its rebalance callbacks inside ``consume``, on the thread that
called it (an executor thread here); each hands its work to the event loop and waits for it:
a revoke commits what was drained and gives back what waits for order (re-read from the committed
offsets by whoever gets the partition); a loss (this member was thrown out of the group) aborts
the open transaction; an assignment restores the node states and scores, which may include what
another member committed, before any record is pushed.

**Order.** Event-time order (``event_time.py``) needs each partition's lag and since when it is
known. The lag is librdkafka's cached high watermark, from its last fetch response, minus the next
offset to hand over. The fetch keeps a request outstanding per broker that returns at most
``FETCH_WAIT_MS`` after it is sent, so the watermark of a caught-up partition is at most that old,
plus the round trip and the hop to this loop, when ``consume`` returns; ``learned`` counts it
``LEARNED_LAG_MS`` older. Every millisecond here is one more that a live event waits for its
silent partitions (``event_time.py``), on top of ``worker_max_idle_ms``.

**A stuck producer.** librdkafka's ``send_offsets_to_transaction`` can block past its own timeout,
for good, once the group coordinator has restarted (librdkafka #5456 and #5511, open; seen here in
the broker-restart test). Every transactional call therefore runs with a deadline
(``call_with_deadline``); a call past it replaces the producer (the new one's
``init_transactions`` fences the old one and aborts its open transaction) and rewinds to the last
commit, as an abortable error does.

**Skipped offsets.** Offsets of a partition continue from its start offset without a hole on
Debezium's topics; a hole is counted (``fraudgraph_skipped_offsets_total``) and logged.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from mode import Service

from fraudgraph.connectors.dead_letter import DeadLetter
from fraudgraph.kafka_config import confluent_config, is_fatal
from fraudgraph.settings import Settings
from fraudgraph.streams import latency, metrics
from fraudgraph.streams.changelog import node_state_topic
from fraudgraph.streams.lag import LagReporter
from fraudgraph.streams.pipeline import Pipeline, Record
from fraudgraph.streams.scoring import APPROVE, TransactionScored
from fraudgraph.streams.state import NodeState

log = logging.getLogger(__name__)

CONSUME_MAX = 5_000  # records one consume call may return
FETCH_WAIT_MS = 10  # how long a fetch waits at the broker for data (Faust's own was 1.5 s)
LEARNED_LAG_MS = FETCH_WAIT_MS + 10  # the margin: the round trip, the hop from consume to the loop
COMMIT_TIMEOUT_S = 10.0  # librdkafka's own timeout for each transactional call (retried while retriable)
STUCK_AFTER_S = COMMIT_TIMEOUT_S + 10  # a call still blocked then never returns (module docstring)
LOOKUP_TIMEOUT_S = 60.0  # the consumer's committed offsets and watermarks at an assignment
LINGER_MS = 5
# The group coordinator is restarting, moving or loading its state: ask again shortly.
COORDINATOR_AWAY = frozenset(
    {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError.COORDINATOR_LOAD_IN_PROGRESS}
)

T = TypeVar("T")


class ProducerStuck(Exception):
    """A transactional call of the producer outlived its own timeout (module docstring)."""


async def call_with_deadline(fn: Callable[..., T], *args: Any, deadline_s: float | None = None) -> T:
    """``fn(*args)`` on a daemon thread of its own; ``ProducerStuck`` once ``deadline_s`` passed.

    Not the event loop's executor: its threads are joined when the loop closes, so one stuck in
    librdkafka would hold up the worker's exit."""
    deadline_s = STUCK_AFTER_S if deadline_s is None else deadline_s
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if done.done():
            return  # given up on
        if error is None:
            done.set_result(result)
        else:
            done.set_exception(error)

    def run() -> None:
        try:
            outcome: tuple[Any, BaseException | None] = (fn(*args), None)
        except BaseException as error:  # noqa: BLE001 -- handed to the awaiting coroutine
            outcome = (None, error)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:
            pass  # the loop closed while this thread was stuck

    name = getattr(fn, "__name__", "call")
    threading.Thread(target=run, name=f"producer-{name}", daemon=True).start()
    try:
        return await asyncio.wait_for(asyncio.shield(done), deadline_s)
    except TimeoutError:
        raise ProducerStuck(f"{name} still blocked after {deadline_s:.0f} s") from None


def cdc_group(settings: Settings) -> str:
    """The CDC loop's consumer group (Faust's own group, ``worker_id``, reads the query topics)."""
    return f"{settings.worker_id}-cdc"


class TransactionalOutputs:
    """The pipeline's sinks: every record goes into the producer's open transaction."""

    def __init__(self, producer: Producer, settings: Settings, scores: dict[bytes, bytes]):
        self.producer, self.scores = producer, scores
        self.scores_topic, self.alerts_topic = settings.scores_topic, settings.alerts_topic
        self.dead_letter_topic, self.state_topic = settings.dead_letter_topic, node_state_topic(settings)
        self.in_transaction = False
        self.offsets: dict[tuple[str, int], int] = {}  # next offset to commit, per input partition
        self.emitted: list[float] = []  # cdc_append_ms of each score in the open transaction
        self.alerts = 0

    def _send(self, topic: str, key: bytes | None, value: bytes | None, **kwargs: Any) -> None:
        if not self.in_transaction:
            self.producer.begin_transaction()
            self.in_transaction = True
        while True:
            try:
                self.producer.produce(topic, value, key, **kwargs)
                return
            except BufferError:  # librdkafka's queue is full: let it send some first
                self.producer.poll(0.05)

    async def dead_letter(self, record: Record, reason: str, detail: str) -> None:
        letter = DeadLetter(record.key, record.value, reason, detail, record.topic, record.partition, record.offset)
        self._send(self.dead_letter_topic, record.key, record.value, headers=letter.headers())

    async def emit(self, record: Record, scored: TransactionScored) -> None:
        key, value = str(scored.transaction_id).encode(), orjson.dumps(scored)
        if scored.decision != APPROVE:
            self._send(self.alerts_topic, key, value)
            self.alerts += 1
        # In the partition numbered like the transaction's CDC partition: a consumer of one
        # partition of each sees a transaction's row and its score together.
        self._send(self.scores_topic, key, value, partition=record.partition)
        self.scores[key] = value
        self.emitted.append(scored.timings.get("cdc_append_ms", 0))

    async def sync(self) -> None:
        pass  # the commit makes them durable, with the states and offsets

    async def save(self, states: list[NodeState]) -> None:
        for state in states:
            self._send(self.state_topic, state.key.encode(), state.to_json())

    def done(self, record: Record) -> None:
        self.offsets[record.stream] = record.offset + 1

    def committed(self) -> None:
        """The open transaction is committed: count what it carried."""
        latency.scores_committed(self.emitted)
        metrics.RECORDS_OUT.labels("alerts").inc(self.alerts)
        self.aborted()

    def aborted(self) -> None:
        self.in_transaction, self.emitted, self.alerts = False, [], 0
        self.offsets.clear()


class CdcLoop(Service):
    def __init__(
        self,
        settings: Settings,
        pipeline: Pipeline,
        outputs: TransactionalOutputs,
        make_producer: Callable[[], Producer],
        topics: Iterable[str],
        restore: Callable[[], Awaitable[None]],
        instance: str,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.settings, self.pipeline, self.outputs, self.make_producer = settings, pipeline, outputs, make_producer
        self.topics, self.restore = sorted(topics), restore
        self.consumer_config = confluent_config(
            settings,
            **{
                "group.id": cdc_group(settings),
                "group.instance.id": instance,  # a restarted member takes its partitions back at once
                "session.timeout.ms": int(settings.worker_session_timeout_s * 1000),
                "enable.auto.commit": False,  # offsets are committed in the transactions
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": FETCH_WAIT_MS,
                "enable.partition.eof": False,
                "error_cb": self._on_error,  # called inside consume
            },
        )
        self.fatal: Any = None  # a fatal error of the current consumer
        self.consumer = Consumer(self.consumer_config)
        self.batch_max, self.batch_s = settings.worker_batch_max, settings.worker_batch_ms / 1000
        self.buffer = settings.worker_order_buffer
        self.checkpoint_ms, self.checkpoint_records = settings.worker_checkpoint_ms, settings.worker_checkpoint_records
        self.assigned: list[tuple[str, int]] = []
        self.start_offsets: dict[tuple[str, int], int] = {}  # where each partition was placed
        self.next_offset: dict[tuple[str, int], int] = {}  # after the last record pushed
        self.paused: set[tuple[str, int]] = set()
        self.unpause: set[tuple[str, int]] = set()  # paused in an earlier assignment
        self.group: Any = None  # the group metadata of this assignment (fences zombie commits)
        self.consumed_ms = -float("inf")  # pipeline clock at the last consume's return
        self.checkpointed_ms = pipeline.now_ms()
        self.lag_reporter = LagReporter("worker", self.topics)
        self.finished = asyncio.Event()

    # ---- lifecycle ----

    @property
    def producer(self) -> Producer:
        return self.outputs.producer

    async def on_start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self._init_producer()
        self._subscribe()
        self.add_future(self._run())

    async def _init_producer(self) -> None:
        """Fences any earlier producer with this transactional id (an earlier process, or a stuck
        producer of this one) and aborts its open transaction; waits for the broker if it is away."""
        await self._retrying(self.producer.init_transactions, COMMIT_TIMEOUT_S)

    async def _replace_producer(self, reason: ProducerStuck) -> None:
        log.error("the transactional producer is stuck (%s): replacing it", reason)
        metrics.CLIENTS_REPLACED.labels("producer").inc()
        self.outputs.aborted()
        self.outputs.producer = self.make_producer()
        await self._init_producer()

    def _on_error(self, err: Any) -> None:
        """An error of the consumer, from ``error_cb`` or as a consumed message. All are
        informational (a broker away, ...: librdkafka retries by itself) except a fatal one, which
        ends this consumer."""
        if is_fatal(err):
            self.fatal = err
        elif err.code() != KafkaError._PARTITION_EOF:
            log.warning("CDC consumer: %s", err)

    def _subscribe(self) -> None:
        self.consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    async def _run(self) -> None:
        try:
            while not self.should_stop:
                records = await self.loop.run_in_executor(None, self.consumer.consume, CONSUME_MAX, self.batch_s)
                self.consumed_ms = self.pipeline.now_ms()
                self._push(records)  # notes a fatal error among them
                if self.fatal is not None:
                    await self._replace_consumer(self.fatal)
                    continue
                self._after_assignment()
                await self._drain()
        except asyncio.CancelledError:
            raise
        except BaseException as err:
            log.exception("the CDC loop failed; stopping the worker")
            await self.crash(err)
        finally:
            self.finished.set()

    async def on_stop(self) -> None:
        await self.finished.wait()  # the last consume returned (within batch_ms)
        try:
            if self.assigned and not self.crashed:
                await self._checkpoint()
        finally:
            # The producer needs no flush: what it sent is in a committed transaction or in an open
            # one, which the next producer with this transactional id aborts.
            await self.loop.run_in_executor(None, self.consumer.close)

    # ---- records in ----

    def _push(self, records: list[Any]) -> None:
        assigned = set(self.assigned)
        for msg in records:
            err = msg.error()
            if err is not None:
                self._on_error(err)
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            stream = (topic, partition)
            if stream not in assigned:
                continue  # fetched before a revoke: re-read by the partition's next owner
            expected = self._next(stream)
            if expected is not None and offset < expected:
                continue  # handed over again (none is expected: positions move only by assignment)
            if expected is not None and offset > expected:
                metrics.SKIPPED_OFFSETS.inc(offset - expected)
                log.warning("%s[%s]: offsets %d-%d never delivered", topic, partition, expected, offset - 1)
            self.next_offset[stream] = offset + 1
            self.pipeline.push(Record(topic, partition, offset, msg.key(), msg.value(), msg.timestamp()[1]))

    def _next(self, stream: tuple[str, int]) -> int | None:
        return self.next_offset.get(stream, self.start_offsets.get(stream))

    def _lag(self, stream: tuple[str, int]) -> int | None:
        nxt = self._next(stream)
        _, high = self.consumer.get_watermark_offsets(TopicPartition(*stream), cached=True)
        return None if nxt is None or high is None or high < 0 else max(high - nxt, 0)

    def _learned(self, stream: tuple[str, int]) -> float:
        return self.consumed_ms - LEARNED_LAG_MS

    # ---- apply, decide, checkpoint ----

    async def _drain(self) -> None:
        if not self.assigned:
            return
        while await self.pipeline.drain(self._lag, self.batch_max, self._learned):
            if len(self.pipeline.undone) >= self.checkpoint_records:
                await self._checkpoint()
        if self.pipeline.undone and self.pipeline.now_ms() - self.checkpointed_ms >= self.checkpoint_ms:
            await self._checkpoint()
        self._backpressure()

    async def _checkpoint(self) -> None:
        await self.pipeline.checkpoint()  # states into the transaction, records done -> offsets
        self.checkpointed_ms = self.pipeline.now_ms()
        offsets = [TopicPartition(t, p, o) for (t, p), o in self.outputs.offsets.items()]
        if not offsets and not self.outputs.in_transaction:
            return
        if not self.outputs.in_transaction:
            self.producer.begin_transaction()
            self.outputs.in_transaction = True
        if self.group is None:  # revoked in the consume call that assigned: the next owner redoes it
            await self._abort()
            return
        try:
            await self._commit(offsets, self.group)
        except ProducerStuck as stuck:
            await self._replace_producer(stuck)
            await self._rewind()
            return
        except KafkaException as exc:
            if not exc.args[0].txn_requires_abort():
                raise  # fatal (fenced by a newer instance, ...): the worker stops
            log.warning("transaction aborted (%s): rewinding to the last commit", exc.args[0])
            await self._rewind()
            return
        self.outputs.committed()

    async def _commit(self, offsets: list[TopicPartition], group: Any) -> None:
        if offsets:
            await self._retrying(self.producer.send_offsets_to_transaction, offsets, group, COMMIT_TIMEOUT_S)
        await self._retrying(self.producer.commit_transaction, COMMIT_TIMEOUT_S)

    async def _retrying(self, call: Callable[..., Any], *args: Any) -> None:
        """``call`` again while it fails with a retriable error (a timeout while the broker is away):
        librdkafka allows it for these calls, and the transaction stays open meanwhile."""
        while True:
            try:
                await call_with_deadline(call, *args)
                return
            except KafkaException as exc:
                if not exc.args[0].retriable():
                    raise
                log.warning("%s: %s; retrying", getattr(call, "__name__", "call"), exc.args[0])

    async def _abort(self) -> None:
        if self.outputs.in_transaction:
            try:
                await self._retrying(self.producer.abort_transaction, COMMIT_TIMEOUT_S)
            except ProducerStuck as stuck:
                await self._replace_producer(stuck)  # its fencing aborts the transaction
        self.outputs.aborted()
        self.pipeline.undone.clear()
        self.pipeline.store.abandon()  # ahead of the commit: only a restore makes it right again

    async def _rewind(self) -> None:
        """Back to the last commit: states and scores restored, partitions re-read from its offsets."""
        await self._abort()
        self.pipeline.reset()
        await self.restore()
        starts = await self.loop.run_in_executor(None, self._start_offsets, [TopicPartition(*s) for s in self.assigned])
        for stream, offset in starts.items():
            self.consumer.seek(TopicPartition(*stream, offset))
        self._placed(starts)

    async def _replace_consumer(self, reason: Any) -> None:
        """librdkafka's consumer cannot go on after a fatal error (seen: a static member fenced by
        its own rejoin after a broker outage longer than the session timeout). What was not
        committed is dropped and a new consumer joins; its assignment restores the state."""
        log.warning("CDC consumer failed for good (%s): replacing it", reason)
        metrics.CLIENTS_REPLACED.labels("consumer").inc()
        await self._give_back(commit=False)
        self.unpause.clear()  # the new consumer has nothing paused
        old, self.consumer, self.fatal = self.consumer, Consumer(self.consumer_config), None
        # Not awaited, and not on the loop's executor (joined at exit): a failed client may hang in close.
        threading.Thread(target=old.close, name="consumer-close", daemon=True).start()
        self._subscribe()

    def _backpressure(self) -> None:
        for stream, queue in self.pipeline.order.queues.items():
            if len(queue) > self.buffer and stream not in self.paused:
                self.consumer.pause([TopicPartition(*stream)])
                self.paused.add(stream)
            elif len(queue) <= self.buffer // 2 and stream in self.paused:
                self.consumer.resume([TopicPartition(*stream)])
                self.paused.discard(stream)

    # ---- rebalances (called inside consume, on its thread) ----

    def _committed(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """The group's committed offsets, asked again while the group coordinator is moving or
        loading (after a broker restart: librdkafka does not mark NOT_COORDINATOR retriable, and a
        rewind after a stuck producer asks right then), for up to ``LOOKUP_TIMEOUT_S``."""
        deadline = time.monotonic() + LOOKUP_TIMEOUT_S
        while True:
            try:
                return self.consumer.committed(partitions, timeout=LOOKUP_TIMEOUT_S)
            except KafkaException as exc:
                err = exc.args[0]
                if not (err.retriable() or err.code() in COORDINATOR_AWAY) or time.monotonic() > deadline:
                    raise
                log.warning("committed offsets: %s; asking again", err)
                time.sleep(0.5)

    def _start_offsets(self, partitions: list[TopicPartition]) -> dict[tuple[str, int], int]:
        out = {}
        for tp in self._committed(partitions):
            offset = tp.offset
            if offset < 0:  # nothing committed: auto.offset.reset=earliest
                offset, _ = self.consumer.get_watermark_offsets(tp, timeout=LOOKUP_TIMEOUT_S)
            out[(tp.topic, tp.partition)] = offset
        return out

    def _placed(self, starts: dict[tuple[str, int], int]) -> None:
        self.start_offsets, self.next_offset = starts, {}
        self.assigned = sorted(starts)
        self.pipeline.order.assign(self.assigned, self.pipeline.now_ms())
        self.group = None

    def _after_assignment(self) -> None:
        """What a new assignment needs from the client, asked outside its rebalance callbacks:
        asked from within one, ``consumer_group_metadata`` waits for the callback to return (a
        deadlock, seen when a member left), and so may other calls that go through the group."""
        if self.assigned and self.group is None:
            self.group = self.consumer.consumer_group_metadata()
        if self.unpause:
            self.consumer.resume([TopicPartition(*s) for s in self.unpause])
            self.unpause.clear()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self.consumer:
            return  # a replaced consumer
        starts = self._start_offsets(partitions)
        asyncio.run_coroutine_threadsafe(self._assigned(starts), self.loop).result()
        consumer.assign([TopicPartition(*s, OFFSET_BEGINNING if o < 0 else o) for s, o in starts.items()])

    async def _assigned(self, starts: dict[tuple[str, int], int]) -> None:
        if starts:
            await self.restore()  # before anything of the new assignment is pushed
        self._placed(starts)
        log.info("CDC partitions assigned: %d", len(starts))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is self.consumer:  # not a replaced one, closing
            asyncio.run_coroutine_threadsafe(self._give_back(commit=True), self.loop).result()

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is self.consumer:
            asyncio.run_coroutine_threadsafe(self._give_back(commit=False), self.loop).result()

    async def _give_back(self, commit: bool) -> None:
        if commit and self.assigned:
            await self._checkpoint()  # what was drained is committed, not given back
        else:
            await self._abort()  # no longer ours: the next owner redoes it
        dropped = self.pipeline.reset()
        self.unpause |= self.paused
        self.paused.clear()
        self.assigned, self.start_offsets, self.next_offset, self.group = [], {}, {}, None
        if dropped:
            log.info("%d events waiting for event-time order given back", len(dropped))

    # ---- observability ----

    async def report_lag(self) -> None:
        async def position(tp: TopicPartition) -> int | None:
            return self._next((tp.topic, tp.partition))

        def highwater(tp: TopicPartition) -> int | None:
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            return high

        await self.lag_reporter.report([TopicPartition(*s) for s in self.assigned], highwater, position)
