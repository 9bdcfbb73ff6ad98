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
    def __init__(self) -> None:
        self.order: EventTimeMerger = EventTimeMerger(max_idle_ms=0)
        self.pushed: list[int] = []

    def push(self, record) -> None:
        self.pushed.append(record.offset)

    def now_ms(self) -> float:
        return 0.0

    async def drain(self, lag, limit, learned=None) -> int:
        return 0


def order_flow(consumer: Consumer, pipeline: Pipeline) -> OrderFlow:
    app = SimpleNamespace(consumer=consumer, consumer_generation_id=2, on_partitions_assigned=SimpleNamespace())
    app.on_partitions_assigned.connect = lambda handler: None
    return OrderFlow(app, pipeline, ["t"], batch_max=10, buffer=100)  # type: ignore[arg-type]


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
