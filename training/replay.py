"""Point-in-time training examples: the CDC log replayed in event-time order through the worker's
own state code.

Why replay rather than query the graph: a training example must see exactly what the worker saw
when it scored that transaction, no more. Replaying the log through ``apply_event`` (the function
the worker runs) and snapshotting the transaction's ``model_request`` right after its own event
gives features that cannot include anything later, and that cannot drift from serving, because
they are computed by the same code. Labels come only from ``fraud_reports`` (``FraudReported``
events), as in production, whenever they arrive in the log.

Sources of events, all yielding decoded ``DomainEvent``s: the CDC topics in Kafka (the real
input), the simulator (its rows through the real Debezium envelope and decoder, in process), or
any iterable such as ``connectors.csv_log``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fraudgraph.connectors import events as ev
from fraudgraph.connectors.decoder import DecodeError, Tombstone, decode
from fraudgraph.connectors.mapping import load_mapping
from fraudgraph.models.batch import ScoringRequest, StateView
from fraudgraph.models.incremental import NeighbourSums
from fraudgraph.models.incremental import NodeState as FrozenState
from fraudgraph.settings import Settings
from fraudgraph.streams.scoring import ScoringInput, model_request
from fraudgraph.streams.state import NodeState, Source, apply_event

FRAUD_KINDS = frozenset({"chargeback", "confirmed_fraud"})  # "false_positive" reports clear a transaction


@dataclass
class Example:
    transaction_id: int
    ts_ms: int
    request: ScoringRequest  # frozen copies of the states as they were right after the transaction


@dataclass
class Replay:
    examples: list[Example] = field(default_factory=list)
    labels: dict[int, int] = field(default_factory=dict)  # transaction id -> 1 fraud, 0 cleared
    events: int = 0
    skipped: Counter = field(default_factory=Counter)  # why events were not applied (decode errors, ...)

    def label(self, transaction_id: int) -> int:
        """Unreported transactions count as legitimate: the bank's own view at the log's end."""
        return self.labels.get(transaction_id, 0)

    def labelled(self, unlabelled: Collection[int] = ()) -> tuple[list[int], list[bool]]:
        """Per example, its label and whether it is known. ``unlabelled`` names transactions whose
        label the source declared unknown (``read_csv_log``'s ``unlabelled``): they are masked out,
        not counted as legitimate; a report about one still labels it (the later word wins)."""
        labels = [self.label(e.transaction_id) for e in self.examples]
        known = [e.transaction_id in self.labels or e.transaction_id not in unlabelled for e in self.examples]
        return labels, known


class _LiveStore(dict):
    """States kept as live objects (the worker's table keeps JSON; replays need no serialisation:
    every example is snapshotted by copy, so later mutation cannot reach it)."""

    def put(self, state: NodeState) -> None:
        self[state.key] = state


def _freeze(state: StateView) -> FrozenState:
    n = state.neighbours
    return FrozenState(
        state.node_type, list(state.features), NeighbourSums(dict(n.counts), {k: list(v) for k, v in n.sums.items()})
    )


def replay(events: Iterable[ev.DomainEvent]) -> Replay:
    """Apply ``events`` (already in event-time order) and snapshot every new transaction."""
    store, out = _LiveStore(), Replay()
    for offset, event in enumerate(events):
        out.events += 1
        applied = apply_event(event, Source("replay", 0, offset, event.position.ts_ms), store)
        if isinstance(event, ev.FraudReported):
            out.labels[event.transaction_id] = int(event.kind in FRAUD_KINDS)
        t = applied.transaction
        if t is None or applied.replayed:
            continue
        inp = ScoringInput(t, Source("replay", 0, offset, event.position.ts_ms), {s.key: s for s in applied.touched})
        req = model_request(inp)
        frozen = ScoringRequest(_freeze(req.target), {k: [_freeze(s) for s in v] for k, v in req.neighbours.items()})
        out.examples.append(Example(t.transaction_id, event.position.ts_ms, frozen))
    return out


def event_time_order(events: Iterable[ev.DomainEvent]) -> list[ev.DomainEvent]:
    """Commit time, then log position: the order the source database applied the changes (and the
    order ``EventTimeMerger`` releases a partitioned log in: Debezium writes each partition in it)."""
    return sorted(events, key=lambda e: (e.position.ts_ms, e.position.lsn))


def decoded(
    records: Iterable[tuple[str, bytes | None, bytes | None]], settings: Settings, skipped: Counter | None = None
) -> Iterator[ev.DomainEvent]:
    """(topic, key, value) CDC records to domain events; undecodable ones are counted, by reason,
    in ``skipped`` (the worker dead-letters them; a replay must not stop on them either)."""
    mapping = load_mapping(settings.mapping_file or None)
    for topic, key, value in records:
        try:
            event = decode(topic, value, mapping, settings.decimal_handling_mode, key)
        except DecodeError as err:
            if skipped is not None:
                skipped[err.reason] += 1
            continue
        if not isinstance(event, Tombstone):
            yield event


def kafka_records(settings: Settings, timeout_s: float = 30.0) -> list[tuple[str, bytes | None, bytes | None]]:
    """Everything on the CDC topics up to their current ends (a bounded snapshot of the log)."""
    from confluent_kafka import Consumer, TopicPartition

    from fraudgraph.kafka_config import confluent_config

    mapping = load_mapping(settings.mapping_file or None)
    consumer = Consumer(
        confluent_config(
            settings, **{"group.id": "fraudgraph-train", "enable.auto.commit": False, "auto.offset.reset": "earliest"}
        )
    )
    try:
        topics = mapping.topics(settings.topic_prefix)
        meta = consumer.list_topics(timeout=timeout_s)
        ends: dict[tuple[str, int], int] = {}
        assign = []
        for topic in topics:
            if topic not in meta.topics:
                continue
            for p in meta.topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
                if high > low:
                    ends[topic, p] = high
                    assign.append(TopicPartition(topic, p, low))
        consumer.assign(assign)
        out: list[tuple[str, bytes | None, bytes | None]] = []
        while ends:
            msg = consumer.poll(timeout_s)
            if msg is None:
                raise TimeoutError(f"CDC topics stopped delivering before their ends: {sorted(ends)}")
            if msg.error():
                raise RuntimeError(str(msg.error()))
            read, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert read is not None and partition is not None and offset is not None  # set on a consumed message
            out.append((read, msg.key(), msg.value()))
            if offset + 1 >= ends.get((read, partition), 0):
                ends.pop((read, partition), None)
        return out
    finally:
        consumer.close()


def simulator_records(config: Any, settings: Settings) -> Iterator[tuple[str, bytes, bytes]]:
    """The simulator's rows as the Debezium envelopes the Kafka sink would write, without Kafka
    (for offline experiments and tests of the training pipeline itself)."""
    from fraudgraph.stack.simulator.envelope import DebeziumEncoder
    from fraudgraph.stack.simulator.generator import Workload

    encoder = DebeziumEncoder(settings.topic_prefix, settings.pg_database)
    for i, row in enumerate(Workload(config)):
        topic, key, value = encoder.encode(row, event_ts_ms=int(row.at.timestamp() * 1000))
        yield topic, key, value
        if i % 200 == 199:
            encoder.commit()
