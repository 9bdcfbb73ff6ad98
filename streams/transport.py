"""The worker's Kafka clients: Faust's aiokafka consumer and producer, each with gaps closed.

**Consumer: nothing of a stream partition is handed over before it is positioned.** At every
assignment Faust pauses the partitions, restores the tables, then *resumes* the stream partitions
and only then seeks them to their committed offsets (``Recovery.on_recovery_completed``). Records
fetched from wherever the client stood in that window reach the agents, and a fetched batch is
still handed over after the seek. Faust then drops every record below the newest offset it handed
over (its read offset), so a stale record delivered after the seek makes Faust skip the ones the
seek brings back: seen as 3 records per partition never delivered to a restarted worker, and their
transactions never scored. Here a stream partition resumes only once ``perform_seek`` has placed it.

**Consumer: a fetched record that is not handed over is fetched again.** Faust's pause and resume
are bookkeeping of its own: aiokafka keeps fetching every assigned partition, and Faust's
``getmany`` passes its live set of active partitions to aiokafka's ``fetched_records``, which
returns the records of *every* partition when that set is empty (``if partitions and tp not in
partitions``), and advances their positions. Faust then skips the records of partitions that are
not active, and nothing ever fetches them again. The set is empty exactly when all stream
partitions wait for the seek above and recovery has paused the changelogs: seen as a member that
took over a killed member's partitions, sought to offset 26 of one, whose first delivered record
was 398. ``getmany`` here rewinds each partition whose records it does not hand over to the first
of them, before handing anything over, so nothing runs between the drain and the rewind; while
the flow is stopped that is every partition drained (Faust seeks all to their committed offsets
there instead, which a partition held for its seek must not see before that seek).

The seek: aiokafka skips it when the committed offset is missing or 0 (``seek_to_committed``:
``if offset and offset > 0``), which would leave a fresh group's partition wherever the client
stood; such a partition goes to its first offset, which is what ``auto_offset_reset=earliest``
promises. The seek is an explicit ``seek`` run on the consumer's own thread (what aiokafka does for
committed partitions), not ``seek_to_beginning``, whose reset aiokafka resolves in the background.
``start_offsets`` keeps where each stream partition was placed: the next offset it delivers, until
it delivers one (``flow.py`` reads a partition's lag from it). Changelog partitions are left alone:
Faust positions them itself during recovery and never commits offsets for them.

The consumer also tells when a fetch last reported a partition's high watermark (``fetched_ms``): a
lag computed from it is only as current as that fetch (``flow.py``). A fetch of partitions with no
new records waits at the broker for up to ``fetch_max_wait_ms``, which Faust hard-codes at 1.5 s;
the event-time order holds an event until a fetch answered after it shows every silent partition
caught up, so on a quiet stream that wait was the event's (at 10 transactions/s: steady p50 134 ms,
max 1.5 s; with 20 ms: 72 ms and 95 ms, ``benchmarks/results/performance.md``). The price is up to
50 empty fetches a second per broker while the stream is idle.

**Producer.** Faust turns on idempotence only inside Kafka transactions, which the worker does not
use (app.py says why). Without it a produce that reached the broker but whose answer was lost (a
broker restart, a leader change: the broker-restart test shows ``NotLeaderForPartition`` retries)
can be written twice. With ``enable_idempotence`` the broker drops the retried copy.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, Message

FETCH_MAX_WAIT_MS = 20


class ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by its fetcher, created at start
        return consumer


class Consumer(aiokafka_driver.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.positioned: set[TP] = set()  # stream partitions perform_seek placed in this assignment
        self.held: set[TP] = set()  # stream partitions asked to resume before that
        self.start_offsets: dict[TP, int] = {}  # where perform_seek placed each stream partition

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self.positioned.difference_update(revoked)
        self.held.difference_update(revoked)
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        self.positioned.difference_update(assigned)
        await super().on_partitions_assigned(assigned, generation_id)

    def resume_partitions(self, tps: Iterable[TP]) -> None:
        tps = set(tps)
        waiting = {tp for tp in tps if tp not in self.positioned and not self._is_changelog_tp(tp)}
        self.held |= waiting
        super().resume_partitions(tps - waiting)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        assignment = self.assignment()
        self.positioned |= {tp for tp in assignment if not self._is_changelog_tp(tp)}
        held, self.held = self.held & assignment, set()
        super().resume_partitions(held)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        records, active = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        handed = records if self.flow_active else {}
        if active is not None:  # None: a client-only app, every partition counts as active
            handed = {tp: rs for tp, rs in handed.items() if tp in active or tp in self._buffered_partitions}
        not_handed = records.keys() - handed.keys()
        if not_handed:
            assignment = self.assignment()  # a revoked partition's next owner reads it from the committed offset
            for tp in not_handed & assignment:
                self._thread.seek(tp, records[tp][0].offset)
        for tp, record in self.scheduler.iterate(handed):
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                break  # a rebalance began: its seek to the committed offsets re-reads the rest
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            yield tp, self._to_message(tp, record)

    def fetched_ms(self, tp: TP) -> int | None:
        """When (wall-clock ms) a fetch last told the client ``tp``'s high watermark; None before."""
        try:
            return self._thread._ensure_consumer().last_poll_timestamp(tp)
        except Exception:  # noqa: BLE001 - not assigned (mid-rebalance) or not started: unknown
            return None

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        streams = {tp: offset for tp, offset in committed.items() if not self._is_changelog_tp(tp)}
        uncommitted = [tp for tp, offset in streams.items() if not offset]
        earliest = await self._thread.earliest_offsets(*uncommitted) if uncommitted else {}
        if earliest:
            await self.seek_wait(earliest)
        self.start_offsets = {tp: offset for tp, offset in streams.items() if offset} | dict(earliest)
        return committed


class Producer(aiokafka_driver.Producer):
    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}
