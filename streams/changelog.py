"""The worker's compacted topics, read back whole: the node-state changelog and ``fraud.scores``.

Both are written in the CDC loop's transactions (``cdc_loop.py``) and restored into memory at every
assignment, read committed, so a restart starts from exactly the last commit: what a crashed
process had sent after it is aborted and never read.

A key's records all go to one partition (Java's murmur2, as Faust's tables did, so a changelog
Faust wrote reads the same), so compaction keeps its last one and a restore reading the
partitions in any order ends with each key's newest record.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from fraudgraph.kafka_config import confluent_config, is_fatal
from fraudgraph.settings import Settings

log = logging.getLogger(__name__)

CONSUME_MAX = 10_000


def node_state_topic(settings: Settings) -> str:
    return f"{settings.worker_id}-node-state-changelog"


def read_to_end(settings: Settings, topic: str, timeout_s: float = 60.0) -> Iterator[tuple[bytes, bytes | None]]:
    """Every committed record of ``topic`` up to its end as of this call, as (key, value or None).

    A partition is read until its record before the high watermark, or until the client reports
    its end (``PARTITION_EOF``): with transactions the last offsets are commit markers, which are
    never handed over, and compaction may have removed the record before the watermark."""
    consumer = Consumer(
        confluent_config(
            settings,
            **{
                "group.id": f"{settings.worker_id}-restore",  # assigned, not subscribed: never joins or commits
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
                # Larger fetches than librdkafka's 1 MiB per partition: a restore is one long read
                # (1M states of 1.1 KB: 3.1 s against 5.2 s, benchmarks/results/performance.md).
                "max.partition.fetch.bytes": 16 << 20,
                "fetch.max.bytes": 64 << 20,
            },
        )
    )
    try:
        partitions = consumer.list_topics(topic, timeout=timeout_s).topics[topic].partitions
        ends: dict[int, int] = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        while ends:
            for msg in consumer.consume(CONSUME_MAX, 0.05):  # returns when full or at the timeout
                p, err = msg.partition(), msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF and p is not None:
                        ends.pop(p, None)
                    elif is_fatal(err):
                        raise KafkaException(err)
                    else:  # informational (a broker away): librdkafka retries by itself
                        log.warning("restoring %s: %s", topic, err)
                    continue
                key, offset = msg.key(), msg.offset()
                if p not in ends or key is None or offset is None:
                    continue
                yield key, msg.value()
                if offset >= ends[p] - 1:
                    del ends[p]
    finally:
        consumer.close()
