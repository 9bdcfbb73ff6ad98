"""OrderFlow's own decisions, with Faust's app and consumer reduced to the attributes it reads."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace

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


def test_a_batch_fetched_before_a_rebalance_is_forgotten_for_the_seek_to_redeliver():
    consumer = Consumer()
    app = SimpleNamespace(consumer=consumer, consumer_generation_id=2, on_partitions_assigned=SimpleNamespace())
    app.on_partitions_assigned.connect = lambda handler: None
    pipeline = Pipeline()
    flow = OrderFlow(app, pipeline, ["t"], batch_max=10, buffer=100)  # type: ignore[arg-type]
    stale = [Message("t", 0, offset, generation_id=1) for offset in (40, 41)]  # held by take_events
    current = [Message("t", 0, offset, generation_id=2) for offset in (30, 31)]  # from the committed offset
    consumer.unacked.update(stale + current)

    asyncio.run(flow.deliver(SimpleNamespace(message=m) for m in stale + current))

    assert pipeline.pushed == [30, 31]
    assert consumer.unacked == set(current)  # the stale ones are never acked: their offsets stay uncommitted
