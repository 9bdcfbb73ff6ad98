"""The worker's consumer hands nothing of a stream partition over before the seek placed it."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace

from faust.types import TP

from fraudgraph.streams.transport import Consumer

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


def consumer() -> Consumer:
    c = Consumer.__new__(Consumer)  # Faust's service machinery is not needed for these methods
    c.app = SimpleNamespace(tables=SimpleNamespace(changelog_topics={CHANGELOG.topic}))
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
