"""The CDC loop's outputs: what goes into one Kafka transaction (the broker side is tested in
tests/integration: SIGKILL, two workers, broker restart)."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import replace

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from fraudgraph.settings import Settings
from fraudgraph.streams import cdc_loop
from fraudgraph.streams.cdc_loop import CdcLoop, ProducerStuck, TransactionalOutputs, call_with_deadline
from fraudgraph.streams.pipeline import Record
from fraudgraph.streams.scoring import TransactionScored
from fraudgraph.streams.state import NodeState

SETTINGS = Settings(worker_id="w", scores_topic="scores", alerts_topic="alerts", dead_letter_topic="dlq")


class Producer:
    def __init__(self) -> None:
        self.transactions = 0
        self.sent: list[tuple[str, bytes | None, dict]] = []

    def begin_transaction(self) -> None:
        self.transactions += 1

    def produce(self, topic, value, key, **kwargs) -> None:
        self.sent.append((topic, key, kwargs))


def scored(transaction_id: int, decision: str) -> TransactionScored:
    return TransactionScored(
        transaction_id=transaction_id,
        account_id=7,
        score=0.9,
        decision=decision,
        reasons=[],
        model_version="none",
        feature_spec="",
        state_versions={},
        source={},
        timings={"cdc_append_ms": 0},
    )


def test_one_checkpoint_is_one_transaction_with_alerts_scores_states_and_offsets():
    producer, scores = Producer(), {}
    out = TransactionalOutputs(producer, SETTINGS, scores)  # type: ignore[arg-type]
    record = Record("bank.public.transactions", 3, 41, b"k", b"v", 0)

    async def run() -> None:
        await out.emit(record, scored(1, "review"))
        await out.emit(replace(record, offset=42), scored(2, "approve"))
        await out.save([NodeState("Account", "Account:7", [1.0])])
        await out.dead_letter(replace(record, offset=43), "not_json", "bad")

    asyncio.run(run())
    for offset in (41, 42, 43):
        out.done(replace(record, offset=offset))
    assert producer.transactions == 1 and out.in_transaction
    assert [(t, k) for t, k, _ in producer.sent] == [
        ("alerts", b"1"),  # a review decision is an alert too
        ("scores", b"1"),
        ("scores", b"2"),
        ("w-node-state-changelog", b"Account:7"),
        ("dlq", b"k"),
    ]
    assert [kw.get("partition") for t, _, kw in producer.sent if t == "scores"] == [3, 3]  # its CDC partition
    assert orjson.loads(scores[b"2"])["decision"] == "approve"
    assert out.offsets == {("bank.public.transactions", 3): 44}  # the next offset to read
    out.committed()
    assert not out.in_transaction and out.offsets == {} and out.emitted == []
    asyncio.run(out.save([NodeState("Account", "Account:8", [1.0])]))
    assert producer.transactions == 2  # the next record opens the next transaction


def test_a_call_past_its_deadline_is_given_up_without_blocking_the_loop():
    release = threading.Event()

    async def run() -> tuple[int, float]:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.ensure_future(tick())
        started = time.monotonic()
        with pytest.raises(ProducerStuck, match="wait still blocked"):
            await call_with_deadline(release.wait, deadline_s=0.3)
        ticker.cancel()
        return ticks, time.monotonic() - started

    ticks, took = asyncio.run(run())  # returns although the thread is still blocked
    release.set()
    assert 0.3 <= took < 2 and ticks >= 10


def test_a_call_within_its_deadline_returns_or_raises_what_it_did():
    def fail() -> None:
        raise KeyError("k")

    assert asyncio.run(call_with_deadline(lambda: 42, deadline_s=5)) == 42
    with pytest.raises(KeyError):
        asyncio.run(call_with_deadline(fail, deadline_s=5))


class TxnProducer(Producer):
    """Records the transactional calls; ``stuck`` blocks send_offsets past any timeout, as
    librdkafka does after the group coordinator restarted (#5456, #5511)."""

    def __init__(self, stuck: bool = False) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.stuck, self.release = stuck, threading.Event()

    def init_transactions(self, timeout: float) -> None:
        self.calls.append("init")

    def send_offsets_to_transaction(self, offsets, group, timeout: float) -> None:
        self.calls.append("send_offsets")
        if self.stuck:
            self.release.wait()

    def commit_transaction(self, timeout: float) -> None:
        self.calls.append("commit")

    def abort_transaction(self, timeout: float) -> None:
        self.calls.append("abort")


class CheckpointOnly:
    """The pipeline as far as a checkpoint needs it."""

    undone: list = []

    def now_ms(self) -> float:
        return 0.0

    async def checkpoint(self) -> None:
        pass


def test_a_stuck_commit_replaces_the_producer_and_rewinds_to_the_last_commit(monkeypatch):
    monkeypatch.setattr(cdc_loop, "STUCK_AFTER_S", 0.3)
    stuck, fresh = TxnProducer(stuck=True), TxnProducer()
    outputs = TransactionalOutputs(stuck, SETTINGS, {})  # type: ignore[arg-type]
    loop = CdcLoop(SETTINGS, CheckpointOnly(), outputs, lambda: fresh, ["t"], None, "i")  # type: ignore[arg-type]
    rewound: list[bool] = []

    async def rewind() -> None:
        rewound.append(True)

    monkeypatch.setattr(loop, "_rewind", rewind)
    before = cdc_loop.metrics.CLIENTS_REPLACED.labels("producer")._value.get()

    async def run() -> None:
        loop.loop, loop.group = asyncio.get_running_loop(), object()
        await outputs.emit(Record("t", 0, 4, b"k", b"v", 0), scored(1, "approve"))
        outputs.done(Record("t", 0, 4, b"k", b"v", 0))
        await loop._checkpoint()

    try:
        asyncio.run(run())
    finally:
        stuck.release.set()
        loop.consumer.close()
    assert stuck.calls == ["send_offsets"]  # never committed: the new producer's fencing aborts it
    assert loop.producer is fresh and fresh.calls == ["init"]
    assert rewound == [True] and not outputs.in_transaction and outputs.offsets == {}
    assert cdc_loop.metrics.CLIENTS_REPLACED.labels("producer")._value.get() == before + 1


def test_a_fatal_consumer_error_is_noted_however_librdkafka_hands_it_over():
    loop = CdcLoop(
        SETTINGS, CheckpointOnly(), TransactionalOutputs(TxnProducer(), SETTINGS, {}), TxnProducer, ["t"], None, "i"
    )  # type: ignore[arg-type]
    try:
        loop._on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        assert loop.fatal is None  # librdkafka retries by itself
        fenced = KafkaError(KafkaError._FATAL, "Static consumer fenced by other consumer with same group.instance.id")
        assert not fenced.fatal()  # the code says it, not the flag
        loop._on_error(fenced)
        assert loop.fatal is fenced
    finally:
        loop.consumer.close()


def test_a_retriable_commit_error_is_retried_in_the_same_transaction():
    class AwayOnce(TxnProducer):
        def commit_transaction(self, timeout: float) -> None:
            super().commit_transaction(timeout)
            if self.calls.count("commit") == 1:  # the broker is away: librdkafka says try again
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "timed out", retriable=True))

    producer = AwayOnce()
    outputs = TransactionalOutputs(producer, SETTINGS, {})  # type: ignore[arg-type]
    loop = CdcLoop(SETTINGS, CheckpointOnly(), outputs, AwayOnce, ["t"], None, "i")  # type: ignore[arg-type]

    async def run() -> None:
        loop.loop, loop.group = asyncio.get_running_loop(), object()
        await outputs.emit(Record("t", 0, 4, b"k", b"v", 0), scored(1, "approve"))
        outputs.done(Record("t", 0, 4, b"k", b"v", 0))
        await loop._checkpoint()

    try:
        asyncio.run(run())
    finally:
        loop.consumer.close()
    assert producer.calls == ["send_offsets", "commit", "commit"] and loop.producer is producer
    assert not outputs.in_transaction and outputs.offsets == {}


def test_committed_offsets_are_asked_again_while_the_coordinator_is_away(monkeypatch):
    """Seen in the broker-restart test: a rewind right after the broker came back asked for the
    committed offsets while the coordinator was still loading, got NOT_COORDINATOR (not marked
    retriable by librdkafka) and stopped the worker."""
    monkeypatch.setattr(cdc_loop.time, "sleep", lambda _s: None)

    class Consumer:
        def __init__(self, failures: list[int]) -> None:
            self.failures = failures

        def committed(self, partitions, timeout):
            if self.failures:
                raise KafkaException(KafkaError(self.failures.pop(0), "coordinator away"))
            return partitions

        def close(self) -> None:
            pass

    loop = CdcLoop(
        SETTINGS, CheckpointOnly(), TransactionalOutputs(TxnProducer(), SETTINGS, {}), TxnProducer, ["t"], None, "i"
    )  # type: ignore[arg-type]
    loop.consumer.close()
    away = [KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE]
    loop.consumer = Consumer(list(away))  # type: ignore[assignment]
    assert loop._start_offsets([TopicPartition("t", 0, 7)]) == {("t", 0): 7}
    loop.consumer = Consumer([KafkaError.GROUP_AUTHORIZATION_FAILED])  # type: ignore[assignment]
    with pytest.raises(KafkaException):
        loop._start_offsets([TopicPartition("t", 0, 7)])
