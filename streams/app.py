"""The Faust application: topics, agents and the worker's web endpoint, built from Settings.

Reading top to bottom is reading the pipeline: CDC topics -> decode (bad input to the
dead-letter topic) -> downstream stages.
"""

from __future__ import annotations

import logging
import time

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fraudgraph.connectors.dead_letter import DeadLetter
from fraudgraph.connectors.events import TableTruncated
from fraudgraph.connectors.decoder import DECODER_BUG, DecodeError, Tombstone, decode, table_of
from fraudgraph.connectors.mapping import load_mapping
from fraudgraph.settings import Settings
from fraudgraph.streams import metrics

log = logging.getLogger(__name__)


def create_app(settings: Settings) -> faust.App:
    mapping = load_mapping(settings.mapping_file or None)
    app = faust.App(
        settings.worker_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        web_host=settings.worker_web_host,
        web_port=settings.worker_web_port,
        web_in_thread=False,
        store="memory://",
        datadir=str(settings.worker_data_dir),
        topic_partitions=4,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    cdc = app.topic(*[settings.cdc_topic(t) for t in mapping.tables], **raw)
    dead_letters = app.topic(settings.dead_letter_topic, partitions=1, **raw)

    async def dead_letter(message, reason: str, detail: str) -> None:
        record = DeadLetter(message.key, message.value, reason, detail, message.topic, message.partition, message.offset)
        await dead_letters.send(key=message.key, value=message.value, headers=record.headers())
        metrics.DEAD_LETTERS.labels(reason).inc()
        log.warning("dead-lettered %s[%s]@%s: %s: %s", message.topic, message.partition, message.offset, reason, detail[:200])

    @app.agent(cdc)
    async def ingest(stream):
        async for event in stream.events():
            message = event.message
            table = table_of(message.topic)
            metrics.EVENTS_IN.labels(table).inc()
            started = time.perf_counter()
            try:
                decoded = decode(message.topic, message.value, mapping, settings.decimal_handling_mode, message.key)
            except DecodeError as err:
                await dead_letter(message, err.reason, err.detail)
                continue
            except Exception as err:  # a decoder bug must not stop the stream; the message is kept
                log.exception("decoder failed on %s[%s]@%s", message.topic, message.partition, message.offset)
                await dead_letter(message, DECODER_BUG, f"{type(err).__name__}: {err}")
                continue
            finally:
                metrics.DECODE_SECONDS.observe(time.perf_counter() - started)
            if isinstance(decoded, Tombstone):
                metrics.TOMBSTONES.labels(table).inc()
                continue
            metrics.EVENTS_DECODED.labels(type(decoded).__name__).inc()
            if isinstance(decoded, TableTruncated):
                log.warning("source table of %s was TRUNCATEd at lsn %s: no per-row deletes follow",
                            decoded.entity, decoded.position.lsn)

    @app.task
    async def graph_sink():
        from fraudgraph.streams.graph_sink import run_graph_sink

        await run_graph_sink(settings, mapping, list(cdc.topics))

    @app.page("/metrics")
    async def prometheus_metrics(web, request):
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    return app
