"""The worker's consumer hands nothing of a stream partition over before the seek placed it, and a
record it fetched but did not hand over is fetched again."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace

from faust.transport.utils import DefaultSchedulingStrategy
from faust.types import TP

from fraudgraph.settings import Settings
from fraudgraph.streams.transport import FETCH_MAX_WAIT_MS, Consumer

CDC = [TP("bank.public.transactions", 0), TP("bank.public.transactions", 1)]
CHANGELOG = TP("worker-node-state-changelog", 0)


class Thread:
    """The consumer thread, reduced to what a seek asks of it: partition 0 committed at 51, 1 never."""

    def __init__(self) -> None:
        self.seeks: dict[TP, int] = {}

    def assignment(self) -> set[TP]:
        return {*CDC, CHANGELOG}

    async def seek_to_committed(self) -> dict[TP, int | None]:
        self.seeks[CDC[0]] = 51
        return {CDC[0]: 51, CDC[1]: None, CHANGELOG: None}

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: 7 for tp in tps}

    async def seek_wait(self, offsets: dict[TP, int]) -> None:
        self.seeks.update(offsets)

    def seek(self, tp: TP, offset: int) -> None:
        self.seeks[tp] = offset

    def highwater(self, tp: TP) -> int:
        return 100


def consumer() -> Consumer:
    c = Consumer.__new__(Consumer)  # Faust's service machinery is not needed for these methods
    c.app = SimpleNamespace(
        tables=SimpleNamespace(changelog_topics={CHANGELOG.topic}),
        consumer_generation_id=3,
        monitor=SimpleNamespace(track_tp_end_offset=lambda tp, offset: None),
    )
    c._thread = Thread()
    c._active_partitions, c._paused_partitions = set(), {*CDC, CHANGELOG}  # paused at assignment
    c._read_offset, c._committed_offset = defaultdict(lambda: None), defaultdict(lambda: None)
    c.positioned, c.held, c.start_offsets = set(), set(), {}
    return c


def test_stream_partitions_resumed_before_the_seek_stay_paused_until_it_placed_them():
    c = consumer()
    c.resume_partitions([*CDC, CHANGELOG])  # what Faust's recovery does right before perform_seek
    assert c._active_partitions == {CHANGELOG}  # the table's changelog is read; the streams wait

    asyncio.run(c.perform_seek())

    assert c._active_partitions == {*CDC, CHANGELOG}
    assert c._thread.seeks == {CDC[0]: 51, CDC[1]: 7}  # never committed: its first offset
    assert c.start_offsets == {CDC[0]: 51, CDC[1]: 7}  # the next offsets they deliver (flow.py)
    c.pause_partitions(CDC)  # backpressure, once placed, pauses and resumes at once
    c.resume_partitions(CDC)
    assert c._active_partitions == {*CDC, CHANGELOG}


def fetched(c: Consumer, records: dict[TP, range], flow_active: bool = True) -> list[tuple[TP, int]]:
    """What ``getmany`` hands over of one drain of aiokafka's buffers that returned ``records``."""

    async def drain(timeout: float):
        drained = {tp: [SimpleNamespace(offset=o) for o in offsets] for tp, offsets in records.items()}
        return drained, c._active_partitions

    c._wait_next_records = drain
    c._to_message = lambda tp, record: (tp, record.offset)
    c.scheduler, c.flow_active, c._buffered_partitions = DefaultSchedulingStrategy(), flow_active, set()
    c._stopped = c._crashed = asyncio.Event()

    async def collect() -> list[tuple[TP, int]]:
        return [message async for _, message in c.getmany(1.0)]

    return asyncio.run(collect())


def test_records_of_a_partition_waiting_for_its_seek_are_fetched_again_not_skipped():
    # aiokafka drains every partition when Faust's set of active ones is empty (all stream
    # partitions wait for the seek, the changelogs are paused): nothing may be lost that way.
    c = consumer()
    c.resume_partitions([*CDC])  # held until the seek
    assert fetched(c, {CDC[0]: range(26, 30), CDC[1]: range(7, 9)}) == []
    assert c._thread.seeks == {CDC[0]: 26, CDC[1]: 7}  # back where the drain found them

    c.positioned.add(CDC[1])  # as if the seek had placed it
    c.resume_partitions([CDC[1]])
    c._thread.seeks.clear()
    assert fetched(c, {CDC[0]: range(26, 30), CDC[1]: range(7, 9)}) == [(CDC[1], 7), (CDC[1], 8)]
    assert c._thread.seeks == {CDC[0]: 26}  # only what was not handed over


def test_a_drain_while_the_flow_is_stopped_rewinds_every_assigned_partition_it_took():
    c = consumer()
    c.positioned.update(CDC)
    c.resume_partitions(CDC)
    revoked = TP("bank.public.transactions", 2)  # no longer assigned: its next owner reads it
    assert fetched(c, {CDC[0]: range(40, 42), revoked: range(3, 5)}, flow_active=False) == []
    assert c._thread.seeks == {CDC[0]: 40}


def test_an_idle_fetch_waits_at_the_broker_for_fetch_max_wait_ms_not_fausts_1_5_s(tmp_path):
    from fraudgraph.streams.app import create_app

    async def created_wait() -> int:
        app = create_app(Settings(worker_data_dir=tmp_path / "data", model_dir=tmp_path / "models"))
        client = app.consumer._thread._create_worker_consumer(app.transport)  # not started: no broker
        try:
            return client._fetch_max_wait_ms
        finally:
            await client.stop()

    assert asyncio.run(created_wait()) == FETCH_MAX_WAIT_MS < 1500
