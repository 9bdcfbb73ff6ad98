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
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError

from fraudgraph.connectors.decoder import DecodeError, Tombstone, decode
from fraudgraph.connectors.mapping import Mapping
from fraudgraph.graph.writer import GraphWriter
from fraudgraph.kafka_config import aiokafka_options
from fraudgraph.settings import Settings
from fraudgraph.streams import metrics
from fraudgraph.streams.lag import LagReporter

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 10.0
LAG_INTERVAL_S = 5.0  # how often the graph group's lag is reported (it is read from the consumer, no I/O)


def graph_group(settings: Settings) -> str:
    return f"{settings.worker_id}-graph"


async def run_graph_sink(settings: Settings, mapping: Mapping, topics: list[str]) -> None:
    """Consume ``topics`` and keep the graph up to date until cancelled."""
    writer = GraphWriter.from_settings(settings)
    consumer = AIOKafkaConsumer(
        *topics,
        **aiokafka_options(settings),  # bootstrap servers and SASL/TLS
        group_id=graph_group(settings),
        group_instance_id=f"{graph_group(settings)}-{settings.worker_instance or socket.gethostname()}-{settings.worker_web_port}",
        session_timeout_ms=int(settings.worker_session_timeout_s * 1000),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    done: dict[TopicPartition, int] = {}  # next offset per partition, of what was handed to the writer
    lag, lag_due = LagReporter("graph", topics), 0.0
    try:
        await writer.start()
        await consumer.start()
        while True:
            batches = await consumer.getmany(timeout_ms=200, max_records=2000)
            if time.monotonic() >= lag_due:  # also while idle, so a caught-up sink reports 0
                lag_due = time.monotonic() + LAG_INTERVAL_S
                await lag.report(consumer.assignment(), consumer.highwater, consumer.position)
            if not batches:
                continue
            newest_append_ms = 0
            appended_ms: list[int] = []
            for tp, records in batches.items():
                newest_append_ms = max(newest_append_ms, records[-1].timestamp or 0)
                appended_ms.extend(r.timestamp for r in records if r.timestamp)
                for record in records:
                    try:
                        event = decode(record.topic, record.value, mapping, settings.decimal_handling_mode, record.key)
                    except DecodeError:
                        event = None
                    if event is not None and not isinstance(event, Tombstone):
                        await writer.submit(event)  # waits while the writer's queue is full
                    done[tp] = record.offset + 1
            flushing = time.perf_counter()
            await writer.flush()
            metrics.GRAPH_WRITE_SECONDS.observe(time.perf_counter() - flushing)
            await _commit(consumer, done)  # only now: what these offsets cover is in Neo4j
            committed_ms = time.time() * 1000
            for ms in appended_ms:
                metrics.GRAPH_APPEND_TO_COMMIT_SECONDS.observe(max(0.0, committed_ms - ms) / 1000)
            metrics.GRAPH_LAST_EVENT_APPEND.set(
                max(newest_append_ms / 1000, metrics.GRAPH_LAST_EVENT_APPEND._value.get())
            )
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


async def _commit(consumer: AIOKafkaConsumer, done: dict[TopicPartition, int]) -> None:
    """Commit what is in Neo4j, for the partitions this member still owns. A partition revoked by a
    rebalance (another worker joined or left) is dropped: its new owner resumes from the last
    commit, and what it replays is harmless (writes are idempotent and version-guarded)."""
    assigned = consumer.assignment()
    for tp in [tp for tp in done if tp not in assigned]:
        del done[tp]
    if not done:
        return
    try:
        await consumer.commit(done)
    except (CommitFailedError, IllegalStateError) as err:  # a rebalance began meanwhile; the next batch commits
        log.info("graph sink commit deferred: %s", err)


async def _flush_and_commit(writer: GraphWriter, consumer: AIOKafkaConsumer, done: dict) -> None:
    await writer.flush()
    await _commit(consumer, done)
