"""In-memory sources and sinks for the pipeline (as Bytewax's ``testing.py``): a dataflow test
runs ``Pipeline`` in process, in milliseconds, with no broker. Also what the offline replay of
decisions runs on (``replay_decisions``): the same class, over a complete log.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import orjson

from fraudgraph.connectors.mapping import load_mapping
from fraudgraph.settings import Settings
from fraudgraph.streams.decider import Decider
from fraudgraph.streams.event_time import EventTimeMerger
from fraudgraph.streams.node_states import NodeStates
from fraudgraph.streams.pipeline import Pipeline, Record
from fraudgraph.streams.scoring import TransactionScored
from fraudgraph.streams.state import NodeState


@dataclass
class MemorySinks:
    scores: dict[bytes, TransactionScored] = field(default_factory=dict)
    emitted: int = 0  # scores emitted, duplicates included (there must be none)
    alerts: list[TransactionScored] = field(default_factory=list)
    dead_letters: list[tuple[Record, str, str]] = field(default_factory=list)
    completed: list[Record] = field(default_factory=list)
    saved: dict[str, bytes] = field(default_factory=dict)  # the node-state changelog, compacted

    async def dead_letter(self, record: Record, reason: str, detail: str) -> None:
        self.dead_letters.append((record, reason, detail))

    async def emit(self, record: Record, scored: TransactionScored) -> None:
        self.emitted += 1
        if scored.decision != "approve":
            self.alerts.append(scored)
        self.scores[str(scored.transaction_id).encode()] = scored

    def score_of(self, key: bytes) -> bytes | None:
        scored = self.scores.get(key)
        return None if scored is None else orjson.dumps(scored)

    async def sync(self) -> None:
        pass  # in memory: durable as soon as emitted

    async def save(self, states: list[NodeState]) -> None:
        for state in states:
            self.saved[state.key] = state.to_json()

    def done(self, record: Record) -> None:
        self.completed.append(record)


def partitioned(
    records: Iterable[tuple[str, bytes | None, bytes | None]], partitions: int = 4, timestamp_ms: int = 0
) -> dict[tuple[str, int], list[Record]]:
    """(topic, key, value) records into per-partition logs with offsets, by a hash of the key."""
    logs: dict[tuple[str, int], list[Record]] = {}
    for topic, key, value in records:
        p = zlib.crc32(key or b"") % partitions
        log = logs.setdefault((topic, p), [])
        log.append(Record(topic, p, len(log), key, value, timestamp_ms))
    return logs


def interleaved(logs: dict[tuple[str, int], list[Record]], rng: random.Random, max_chunk: int = 50) -> list[Record]:
    """One arrival order Kafka could produce: each partition in its own order, partitions interleaved
    at random in chunks of 1..max_chunk records (a fetch response's worth)."""
    cursors = {s: 0 for s, log in logs.items() if log}
    out: list[Record] = []
    while cursors:
        s = rng.choice(sorted(cursors))
        n = rng.randint(1, max_chunk)
        out.extend(logs[s][cursors[s] : cursors[s] + n])
        cursors[s] += n
        if cursors[s] >= len(logs[s]):
            del cursors[s]
    return out


async def deliver(pipeline: Pipeline, arrivals: Sequence[Record], fetch: int = 200, batch: int = 256) -> None:
    """Feed ``arrivals`` ``fetch`` records at a time, draining and checkpointing after each fetch as
    the worker does; a partition's lag is the number of its records not delivered yet (the client's
    view)."""
    remaining: dict[tuple[str, int], int] = {}
    for r in arrivals:
        remaining[r.stream] = remaining.get(r.stream, 0) + 1
    pipeline.order.assign(remaining, pipeline.now_ms())

    def lag(stream) -> int:
        return remaining.get(stream, 0)

    for i in range(0, len(arrivals), fetch):
        for r in arrivals[i : i + fetch]:
            pipeline.push(r)
            remaining[r.stream] -= 1
        while await pipeline.drain(lag, batch):
            pass
        await pipeline.checkpoint()
    pipeline.order.max_idle_ms = 0  # the log is complete: nothing can come any more
    while await pipeline.drain(lambda _: 0, batch):
        pass
    await pipeline.checkpoint()


async def replay_decisions(
    records: Iterable[Record], settings: Settings, decider: Decider, batch: int = 256
) -> dict[int, TransactionScored]:
    """The decision on every transaction of a complete CDC log, as the offline replay makes it: the
    worker's own ``Pipeline``, fed the whole log before anything is released, so the merge of its
    partitions is the event-time order. The live worker must publish exactly these."""
    sinks = MemorySinks()
    pipeline = Pipeline(
        load_mapping(settings.mapping_file or None),
        settings.decimal_handling_mode,
        NodeStates(),
        decider,
        sinks,
        EventTimeMerger(max_idle_ms=0),
        sinks.score_of,
    )
    for record in records:
        pipeline.push(record)
    while await pipeline.drain(lambda _: 0, batch):
        pass
    await pipeline.checkpoint()
    return {s.transaction_id: s for s in sinks.scores.values()}
