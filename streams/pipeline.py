"""The worker's hot path as a plain class: decode -> order -> apply -> decide -> emit.

Kafka is wired to it at the edges (``streams/app.py``); a unit test drives it with in-memory
records and sinks (``streams/testing.py``), and the offline replay of decisions is this same class
over a complete log (``replay_decisions``). So the invariant "the same events, in any arrival
order, give the same decisions as the offline replay" is a property of one piece of code.

* ``push`` decodes each record as it arrives (the order key is in the payload) and queues it in
  its partition's FIFO of the ``EventTimeMerger``;
* ``drain`` takes what the merger releases, in event-time order, applies each event to node state
  in memory (``node_states.py``; each new transaction's ``ScoringInput`` is a snapshot right after
  its own event), decides the released transactions together (model and rules concurrently,
  ``Decider``) and emits the decisions;
* ``checkpoint`` makes everything drained since the last one durable: it waits until the emitted
  decisions are, then until each node state changed since then is (written once), and tells the
  sinks each record is done (the app acks its offset then). A hot node (a merchant, a shared device) touched by many
  drains between two checkpoints is written once, and the drains do not wait for the broker.

Bad input never stops it: a record that does not decode, or whose state update or decision
raises, goes to the dead-letter sink with the reason, in its place in the order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fraudgraph.connectors import events as ev
from fraudgraph.connectors.decoder import DECODER_BUG, DecodeError, Tombstone, decode, table_of
from fraudgraph.connectors.mapping import Mapping
from fraudgraph.streams import metrics
from fraudgraph.streams.decider import Decider
from fraudgraph.streams.event_time import EventTimeMerger
from fraudgraph.streams.node_states import NodeStates
from fraudgraph.streams.scoring import ScoringInput, TransactionScored, scored_record
from fraudgraph.streams.state import Applied, NodeState, Source, apply_event

log = logging.getLogger(__name__)

PROCESSING_ERROR = "processing_error"  # dead-letter reason: decoded fine, but state or scoring raised


@dataclass(slots=True)
class Record:
    """One CDC message as the pipeline sees it; ``handle`` is the transport's own (acked when done)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int  # Kafka append time
    handle: Any = None

    @property
    def stream(self) -> tuple[str, int]:
        return self.topic, self.partition


@dataclass(slots=True)
class _Decoded:
    record: Record
    event: ev.DomainEvent | None  # None: nothing to apply (tombstone, or dead-lettered)
    error: tuple[str, str] | None = None  # (reason, detail) to dead-letter


class Sinks(Protocol):
    async def dead_letter(self, record: Record, reason: str, detail: str) -> None: ...

    async def emit(self, record: Record, scored: TransactionScored) -> None:
        """Publish a decision (and its alert unless approved)."""

    async def sync(self) -> None:
        """Return once every decision emitted so far is durable."""

    async def save(self, states: list[NodeState]) -> None:
        """Return once these node states are durable (the changelog a restart restores from)."""

    def done(self, record: Record) -> None:
        """Everything the record causes is applied and emitted: its offset may be committed."""


class Observer(Protocol):
    """The online quality join (``streams/quality_join.py``)."""

    def on_applied(
        self, event: ev.DomainEvent, applied: Applied, score_of: Callable[[bytes], bytes | None]
    ) -> None: ...

    def on_scored(self, transaction_id: int, ts_ms: int, decision: str, states: dict) -> None: ...


class Pipeline:
    def __init__(
        self,
        mapping: Mapping,
        decimal_mode: str,
        store: NodeStates,
        decider: Decider,
        sinks: Sinks,
        order: EventTimeMerger[tuple[str, int]],  # streams: (topic, partition)
        score_of: Callable[[bytes], bytes | None],
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.mapping, self.decimal_mode = mapping, decimal_mode
        self.store = store
        self.decider, self.sinks, self.order = decider, sinks, order
        self.score_of = score_of  # a transaction already scored (before a crash or rebalance) is not scored again
        self.observer = observer
        self.clock = clock
        self.undone: list[Record] = []  # drained, waiting for the next checkpoint to be done

    def reset(self) -> list[Any]:
        """A rebalance, after a checkpoint: forget what waits for order (returned; its records are
        re-read from the committed offsets by whoever gets the partition). The node states are as durable as they are in memory; the app restores them from the
        changelog at the next assignment, which may bring what another worker wrote."""
        assert not self.undone, "reset before the checkpoint of what was drained"
        return self.order.clear()

    def now_ms(self) -> float:
        return self.clock() * 1000

    # ---- decode, order ----

    def push(self, record: Record) -> None:
        """Queue ``record`` for event-time order; each record of a partition once, in offset order."""
        decoded = self._decode(record)
        key = None if decoded.event is None else (decoded.event.position.ts_ms, decoded.event.position.lsn)
        self.order.push(record.stream, key, decoded, self.now_ms())

    def _decode(self, record: Record) -> _Decoded:
        table = table_of(record.topic)
        metrics.child(metrics.EVENTS_IN, table).inc()
        started = time.perf_counter()
        try:
            event = decode(record.topic, record.value, self.mapping, self.decimal_mode, record.key)
        except DecodeError as err:
            return _Decoded(record, None, (err.reason, err.detail))
        except Exception as err:  # a decoder bug must not stop the stream; the message is kept
            log.exception("decoder failed on %s[%s]@%s", record.topic, record.partition, record.offset)
            return _Decoded(record, None, (DECODER_BUG, f"{type(err).__name__}: {err}"))
        finally:
            metrics.DECODE_SECONDS.observe(time.perf_counter() - started)
        if isinstance(event, Tombstone):
            metrics.child(metrics.TOMBSTONES, table).inc()
            return _Decoded(record, None)
        metrics.child(metrics.EVENTS_DECODED, type(event).__name__).inc()
        if isinstance(event, ev.TableTruncated):
            log.warning(
                "source table of %s was TRUNCATEd at lsn %s: no per-row deletes follow",
                event.entity,
                event.position.lsn,
            )
        return _Decoded(record, event)

    # ---- apply, decide, emit ----

    async def drain(
        self,
        lag: Callable[[tuple[str, int]], int | None],
        limit: int | None = None,
        learned: Callable[[tuple[str, int]], float] | None = None,
    ) -> int:
        """Apply and decide what the order releases now (at most ``limit`` records, so a decision
        batch stays bounded); returns how many records were done. ``lag`` and ``learned``: what the
        client knows of each partition's end, and since when (``EventTimeMerger.pop_ready``)."""
        late = self.order.late
        ready: list[_Decoded] = self.order.pop_ready(self.now_ms(), lag, limit, learned)
        metrics.LATE_EVENTS.inc(self.order.late - late)
        metrics.ORDER_BUFFERED.set(self.order.pending())
        pending: dict[bytes, tuple[Record, ScoringInput, float]] = {}
        for item in ready:
            if item.error is not None:
                await self._dead_letter(item.record, *item.error)
            elif item.event is not None:
                try:
                    scored = self._apply(item.record, item.event)
                except Exception as err:  # a bug must not stop the stream: the message is kept, with why
                    log.exception(
                        "state update failed on %s[%s]@%s", item.record.topic, item.record.partition, item.record.offset
                    )
                    await self._dead_letter(item.record, PROCESSING_ERROR, f"{type(err).__name__}: {err}")
                else:
                    if scored is not None and scored[0] not in pending:
                        pending[scored[0]] = (item.record, *scored[1:])
        if pending:
            await self._decide(pending)
        self.store.release_snapshots()  # the batch is decided
        self.undone.extend(item.record for item in ready)
        return len(ready)

    async def checkpoint(self) -> int:
        """Make everything drained so far durable and done; returns how many records were done. The
        scores first, then the states they were computed from (node_states.py says why), then the
        offsets."""
        await self.sinks.sync()
        changed = self.store.changed()
        await self.sinks.save(changed)
        metrics.RECORDS_OUT.labels("node_states").inc(len(changed))
        done, self.undone = self.undone, []
        for record in done:
            self.sinks.done(record)
        return len(done)

    def _apply(self, record: Record, event: ev.DomainEvent) -> tuple[bytes, ScoringInput, float] | None:
        """Apply the event; a new, not yet scored transaction comes back as (key, input, state seconds)."""
        source = Source(record.topic, record.partition, record.offset, record.timestamp_ms)
        started = time.perf_counter()
        applied = apply_event(event, source, self.store)
        elapsed = time.perf_counter() - started
        metrics.STATE_SECONDS.observe(elapsed)
        if applied.replayed:
            metrics.REPLAYS_IGNORED.inc(applied.replayed)
        if self.observer is not None:
            self.observer.on_applied(event, applied, self.score_of)  # a fresh report joins its decision
        tx = applied.transaction
        if tx is None:
            return None
        key = str(tx.transaction_id).encode()
        if self.score_of(key) is not None:  # its record is already on fraud.scores
            return None
        # The states are live objects: frozen, later events of the batch change copies.
        self.store.freeze(s.key for s in applied.touched)
        return key, ScoringInput(tx, source, {s.key: s for s in applied.touched}), elapsed

    async def _decide(self, pending: dict[bytes, tuple[Record, ScoringInput, float]]) -> None:
        inputs = [inp for _, inp, _ in pending.values()]
        started = time.perf_counter()
        try:
            decided = await self.decider.decide(inputs)
        except Exception as err:  # e.g. a rule bug: keep every message of the batch, with why
            log.exception("deciding a batch of %d failed", len(inputs))
            for record, _, _ in pending.values():
                await self._dead_letter(record, PROCESSING_ERROR, f"{type(err).__name__}: {err}")
            return
        decided_ms = int(time.time() * 1000)
        batch_ms = round((time.perf_counter() - started) * 1000, 3)
        for (record, inp, state_s), d in zip(pending.values(), decided):
            scored = scored_record(
                inp,
                d.verdict,
                d.model_version,
                {
                    "cdc_append_ms": inp.source.timestamp_ms,
                    "decided_ms": decided_ms,
                    "state_ms": round(state_s * 1000, 3),
                    "decide_ms": batch_ms,  # the batch's model and rules, run concurrently
                    "rules_ms": round(d.rules_s * 1000, 3),
                    "model_ms": round(d.model_s * 1000, 3),
                    "batch": len(inputs),
                },
            )
            producing = time.perf_counter()
            await self.sinks.emit(record, scored)
            metrics.PRODUCE_SECONDS.observe(time.perf_counter() - producing)
            metrics.child(metrics.DECISIONS, scored.decision).inc()
            if self.observer is not None:
                self.observer.on_scored(
                    inp.transaction.transaction_id, inp.transaction.position.ts_ms, scored.decision, inp.states
                )

    async def _dead_letter(self, record: Record, reason: str, detail: str) -> None:
        await self.sinks.dead_letter(record, reason, detail)
        metrics.DEAD_LETTERS.labels(reason).inc()
        metrics.RECORDS_OUT.labels("dead_letters").inc()
        log.warning(
            "dead-lettered %s[%s]@%s: %s: %s", record.topic, record.partition, record.offset, reason, detail[:200]
        )
