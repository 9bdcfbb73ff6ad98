"""The graph stage: CDC events -> Neo4j, in its own consumer group, off the scoring path.

Why a consumer of its own rather than a call from the scoring agent: Kafka offsets are the only
record of what reached Neo4j. This sink commits its offsets only after the events they cover are
committed in Neo4j (``GraphWriter.flush``), so a crash anywhere loses nothing; the replay that
follows is harmless because every graph write is idempotent and version-guarded. The scoring agent
never waits for Neo4j, and a slow or absent Neo4j only grows this group's lag.

Messages the decoder rejects are skipped here: the ingest agent dead-letters them.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from aiokafka import AIOKafkaConsumer, TopicPartition

from fraudgraph.connectors.decoder import DecodeError, Tombstone, decode
from fraudgraph.connectors.mapping import Mapping
from fraudgraph.graph.writer import GraphWriter
from fraudgraph.settings import Settings

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0


def graph_group(settings: Settings) -> str:
    return f"{settings.worker_id}-graph"


async def run_graph_sink(settings: Settings, mapping: Mapping, topics: list[str]) -> None:
    """Consume ``topics`` and keep the graph up to date until cancelled."""
    writer = GraphWriter.from_settings(settings)
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=graph_group(settings),
        group_instance_id=f"{graph_group(settings)}-{settings.worker_instance or socket.gethostname()}-{settings.worker_web_port}",
        session_timeout_ms=int(settings.worker_session_timeout_s * 1000),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    done: dict[TopicPartition, int] = {}  # next offset per partition, of what was handed to the writer
    try:
        await writer.start()
        await consumer.start()
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            if not batches:
                continue
            for tp, records in batches.items():
                for record in records:
                    try:
                        event = decode(record.topic, record.value, mapping, settings.decimal_handling_mode, record.key)
                    except DecodeError:
                        event = None
                    if event is not None and not isinstance(event, Tombstone):
                        await writer.submit(event)  # waits while the writer's queue is full
                    done[tp] = record.offset + 1
            await writer.flush()
            await consumer.commit(done)  # only now: what these offsets cover is in Neo4j
    except asyncio.CancelledError:
        # Graceful stop: what was handed to the writer is written and committed if Neo4j answers
        # within the grace period; otherwise it is simply replayed by the next run.
        log.info("graph sink stopping")
        try:
            await asyncio.wait_for(_flush_and_commit(writer, consumer, done), SHUTDOWN_GRACE_S)
        except Exception as err:  # noqa: BLE001 -- nothing is lost: uncommitted offsets are replayed
            log.warning("graph sink could not flush on shutdown (%s); the next run replays", err)
        raise
    finally:
        await consumer.stop()
        await writer.abort()


async def _flush_and_commit(writer: GraphWriter, consumer: AIOKafkaConsumer, done: dict) -> None:
    await writer.flush()
    if done:
        await consumer.commit(done)
