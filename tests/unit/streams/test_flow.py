"""OrderFlow's own decisions, with Faust's app and consumer reduced to the attributes it reads."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

from fraudgraph.streams import metrics
from fraudgraph.streams.event_time import EventTimeMerger
from fraudgraph.streams.flow import OrderFlow


@dataclass(eq=False)
class Message:
    topic: str
    partition: int
    offset: int
    generation_id: int
    key: bytes = b"k"
    value: bytes = b"{}"
    timestamp: float = 0.0
    refs: int = 1

    def incref(self) -> None:
        self.refs += 1


@dataclass
class Consumer:
    unacked: set = field(default_factory=set)
    start_offsets: dict = field(default_factory=dict)

    @property
    def _unacked_messages(self) -> set:
        return self.unacked

    def assignment(self) -> set:
        return set()

    def highwater(self, tp) -> None:
        return None

    def _new_topicpartition(self, topic: str, partition: int) -> tuple[str, int]:
        return topic, partition


class Pipeline:
    """Releases every pushed record at once, one drain of at most ``limit``; a checkpoint does them."""

    def __init__(self) -> None:
        self.order: EventTimeMerger = EventTimeMerger(max_idle_ms=0)
        self.pushed: list[int] = []
        self.waiting: list[int] = []
        self.undone: list[int] = []
        self.done: list[list[int]] = []  # per checkpoint
        self.clock = 0.0

    def push(self, record) -> None:
        self.pushed.append(record.offset)
        self.waiting.append(record.offset)

    def now_ms(self) -> float:
        return self.clock

    async def drain(self, lag, limit, learned=None) -> int:
        ready, self.waiting = self.waiting[:limit], self.waiting[limit:]
        self.undone += ready
        return len(ready)

    async def checkpoint(self) -> int:
        self.done.append(self.undone)
        self.undone = []
        return len(self.done[-1])

    def reset(self) -> list:
        assert not self.undone
        return []


def order_flow(consumer: Consumer, pipeline: Pipeline, checkpoint_ms: float = 100, records: int = 1000) -> OrderFlow:
    app = SimpleNamespace(consumer=consumer, consumer_generation_id=2, on_partitions_assigned=SimpleNamespace())
    app.on_partitions_assigned.connect = lambda handler: None
    return OrderFlow(app, pipeline, ["t"], 10, 100, checkpoint_ms, records)  # type: ignore[arg-type]


def messages(offsets) -> list[SimpleNamespace]:
    return [SimpleNamespace(message=Message("t", 0, o, generation_id=2)) for o in offsets]


def test_drained_records_are_done_at_a_checkpoint_by_time_or_by_count_and_before_a_rebalance():
    pipeline = Pipeline()
    flow = order_flow(Consumer(), pipeline, checkpoint_ms=100, records=25)

    asyncio.run(flow.deliver(messages(range(0, 5))))
    assert pipeline.undone == [0, 1, 2, 3, 4] and not pipeline.done  # drained, not yet durable
    pipeline.clock = 99.0
    asyncio.run(flow.tick())
    assert not pipeline.done
    pipeline.clock = 100.0
    asyncio.run(flow.tick())  # a quiet stream: the timer checkpoints
    assert pipeline.done == [[0, 1, 2, 3, 4]]

    asyncio.run(flow.deliver(messages(range(5, 40))))  # drains of 10: a checkpoint once 25 are drained
    assert pipeline.done[1] == list(range(5, 35)) and pipeline.undone == list(range(35, 40))

    asyncio.run(flow.give_back())
    assert pipeline.done[2] == list(range(35, 40)) and not pipeline.undone


def test_a_batch_fetched_before_a_rebalance_is_forgotten_for_the_seek_to_redeliver():
    consumer = Consumer()
    pipeline = Pipeline()
    flow = order_flow(consumer, pipeline)
    stale = [Message("t", 0, offset, generation_id=1) for offset in (40, 41)]  # held by take_events
    current = [Message("t", 0, offset, generation_id=2) for offset in (30, 31)]  # from the committed offset
    consumer.unacked.update(stale + current)

    asyncio.run(flow.deliver(SimpleNamespace(message=m) for m in stale + current))

    assert pipeline.pushed == [30, 31]
    assert consumer.unacked == set(current)  # the stale ones are never acked: their offsets stay uncommitted


def test_offsets_a_partition_steps_over_are_counted_and_logged(caplog):
    consumer = Consumer(start_offsets={("t", 0): 30, ("t", 1): 5})  # where the seek placed them
    pipeline = Pipeline()
    flow = order_flow(consumer, pipeline)
    before = metrics.SKIPPED_OFFSETS._value.get()

    offsets = [("t", 0, 30), ("t", 0, 31), ("t", 0, 35), ("t", 1, 8), ("t", 0, 33)]  # 33: a copy, not a hole
    asyncio.run(flow.deliver(SimpleNamespace(message=Message(t, p, o, generation_id=2)) for t, p, o in offsets))

    assert metrics.SKIPPED_OFFSETS._value.get() - before == 3 + 3  # t[0] 32-34, t[1] 5-7
    assert "t[0]: offsets 32-34 never delivered" in caplog.text
    assert "t[1]: offsets 5-7 never delivered" in caplog.text
