"""The node states' durable copy: a compacted Kafka topic, written once per checkpoint and read back
whole when partitions are assigned (``node_states.py`` holds the live copy in memory).

Why a librdkafka producer and not a Faust table: a table writes each state through Faust's
aiokafka producer and a RocksDB put, in Python, for every write (a quarter of the worker's event
loop at 400 transactions/s, sampled with py-spy); here a checkpoint hands its states to librdkafka,
which batches, compresses and sends them on its own threads, and the event loop only waits.

A key's records all go to one partition (Java's murmur2, as Faust's did, so a changelog Faust wrote
reads the same), so compaction keeps its last one and a restore reading the partitions in any
order ends with each key's newest state. The producer is idempotent: a retry after a broker
restart does not write a record twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from fraudgraph.kafka_config import confluent_config
from fraudgraph.settings import Settings
from fraudgraph.streams.state import NodeState

log = logging.getLogger(__name__)

WAIT_LOG_S = 30.0  # a write still waiting for Kafka says so this often (a broker outage)


def node_state_topic(settings: Settings) -> str:
    return f"{settings.worker_id}-node-state-changelog"


class NodeStateChangelog:
    def __init__(self, settings: Settings, linger_ms: float = 5):
        self.settings, self.topic = settings, node_state_topic(settings)
        self.producer = Producer(
            confluent_config(
                settings,
                **{
                    "enable.idempotence": True,  # acks=all, and a retried batch is written once
                    "linger.ms": linger_ms,
                    "compression.type": "lz4",
                    "partitioner": "murmur2_random",
                },
            )
        )
        self.failed: list[str] = []

    async def write(self, states: list[NodeState]) -> None:
        """Return once every state is in Kafka. A record Kafka refuses for good raises (the worker
        stops rather than acknowledge input whose state is lost)."""
        if not states:
            return
        for state in states:
            key, value = state.key.encode(), state.to_json()
            while True:
                try:
                    self.producer.produce(self.topic, value, key, on_delivery=self._delivered)
                    break
                except BufferError:  # librdkafka's queue is full: let it send some first
                    self.producer.poll(0.05)
        await asyncio.get_running_loop().run_in_executor(None, self._flush)
        if self.failed:
            failed, self.failed = self.failed, []
            raise KafkaException(f"node states not written to {self.topic}: {failed[0]} ({len(failed)} in all)")

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed.append(f"{msg.key()!r}: {err}")

    def _flush(self) -> None:
        while (left := self.producer.flush(WAIT_LOG_S)) > 0:
            log.warning("%d node states still waiting for Kafka (%s) after %.0f s", left, self.topic, WAIT_LOG_S)

    def read(self, timeout_s: float = 60.0) -> Iterator[tuple[str, bytes | None]]:
        """Every record of the topic up to its end as of this call, as (key, value or None)."""
        consumer = Consumer(
            confluent_config(
                self.settings,
                **{
                    "group.id": f"{self.settings.worker_id}-restore",  # never joins or commits
                    "enable.auto.commit": False,
                    "enable.partition.eof": False,
                },
            )
        )
        try:
            partitions = consumer.list_topics(self.topic, timeout=timeout_s).topics[self.topic].partitions
            ends: dict[int, int] = {}
            for p in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout_s)
                if high > low:
                    ends[p] = high
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in ends])
            while ends:
                batch = consumer.consume(10_000, 1.0)
                if not batch:  # the end's own offset may be gone (compaction): ask where reading stands
                    for tp in consumer.position([TopicPartition(self.topic, p) for p in ends]):
                        if tp.offset >= ends[tp.partition]:
                            del ends[tp.partition]
                for msg in batch:
                    if msg.error() is not None:
                        raise KafkaException(msg.error())
                    p, key, offset = msg.partition(), msg.key(), msg.offset()
                    if p not in ends or key is None or offset is None:
                        continue
                    yield key.decode(), msg.value()
                    if offset >= ends[p] - 1:
                        del ends[p]
                        consumer.incremental_unassign([TopicPartition(self.topic, p)])
        finally:
            consumer.close()

    def close(self) -> None:
        self._flush()
