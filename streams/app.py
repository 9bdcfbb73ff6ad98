"""The Faust application: the CDC loop, the query agents and the worker's web endpoint, from Settings.

Reading top to bottom is reading the wiring; ``pipeline.py`` is the hot path itself::

    CDC topics -> CDC loop (cdc_loop.py: librdkafka batches, one Kafka transaction per checkpoint)
               -> decode (bad input -> dead-letter topic)
               -> event-time order across partitions (event_time.py)
               -> apply to node state (node_states.py: in memory; changelog topic per checkpoint)
               -> a new transaction: decide -> fraud.scores (+ fraud.alerts unless approved)
    CDC topics -> graph sink (own process, own consumer group; graph_process.py) -> Neo4j
    fraud.score-requests -> answer from the scores and node states -> fraud.score-replies
    recs.requests -> account state -> recommender (+ merchants' fraud risk) -> recs.replies

Exactly one score per transaction: the decisions, node states and input offsets of a checkpoint
are one Kafka transaction, and the worker restores node states and scores from their topics (read
committed) at every assignment (``cdc_loop.py`` says why that is enough). The scores are kept in
memory too, to answer queries and to know a transaction Debezium sends twice (a connector restart
re-sends from its last committed offset) is already scored.

One worker holds all the node states: a transaction reads the states of its account, merchant,
device and IP, which live under other keys. Each assignment restores them whole from the changelog,
so a member taking partitions over starts from what the other committed last; scaling out needs
those reads to cross workers (see README, "Scaling").
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import faust
import orjson
from confluent_kafka import Producer
from prometheus_client import CONTENT_TYPE_LATEST

from fraudgraph.connectors.mapping import load_mapping
from fraudgraph.kafka_config import confluent_config, faust_credentials
from fraudgraph.models.recommend import RiskParams
from fraudgraph.models.recs_registry import RecsRegistry
from fraudgraph.models.recs_serving import RecsServer
from fraudgraph.models.registry import ModelRegistry
from fraudgraph.models.serving import ModelServer
from fraudgraph.settings import Settings
from fraudgraph.streams import graph_process, metrics
from fraudgraph.streams.cdc_loop import LINGER_MS, CdcLoop, TransactionalOutputs
from fraudgraph.streams.changelog import node_state_topic, read_to_end
from fraudgraph.streams.decider import NO_MODEL, Decider
from fraudgraph.streams.event_time import EventTimeMerger
from fraudgraph.streams.node_states import NodeStates
from fraudgraph.streams.observe import attach_observability
from fraudgraph.streams.pipeline import Pipeline
from fraudgraph.streams.policy import PolicySource
from fraudgraph.streams.quality_join import cohorts
from fraudgraph.streams.queries import answer
from fraudgraph.streams.recommendations import answer_batch, error_reply
from fraudgraph.streams.state import node_key

log = logging.getLogger(__name__)

PARTITIONS = 4  # of the worker's topics (the CDC topics have as many)


def observe_model_batch(size: int, seconds: float, device: str) -> None:
    metrics.MODEL_BATCH_SIZE.labels(device).observe(size)
    metrics.MODEL_INFERENCE_SECONDS.labels(device).observe(seconds)


def instance_id(settings: Settings) -> str:
    """Static group membership name. It includes the web port because Faust's assignor stores each
    member's URL with its assignment and refuses (a silent hang) a returning member whose URL changed."""
    name = settings.worker_instance or socket.gethostname()
    return f"{settings.worker_id}-{name}-{settings.worker_web_port}"


def worker_topics(settings: Settings) -> dict[str, int]:
    """The topics the worker reads and writes, with their partition counts (created at start if
    missing; the CDC topics have the connector's partition count, ``stack/debezium.py``)."""
    mapping = load_mapping(settings.mapping_file or None)
    return {
        **dict.fromkeys(mapping.topics(settings.topic_prefix), PARTITIONS),
        node_state_topic(settings): PARTITIONS,
        settings.scores_topic: PARTITIONS,
        settings.alerts_topic: PARTITIONS,
        settings.score_requests_topic: PARTITIONS,
        settings.score_replies_topic: PARTITIONS,
        settings.recs_requests_topic: PARTITIONS,
        settings.recs_replies_topic: PARTITIONS,
        settings.dead_letter_topic: 1,
    }


def create_app(settings: Settings) -> faust.App:
    mapping = load_mapping(settings.mapping_file or None)
    app = faust.App(
        settings.worker_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=faust_credentials(settings),  # SASL/TLS per the kafka_* settings
        web_host=settings.worker_web_host,
        web_bind=settings.worker_web_host,  # Faust binds 0.0.0.0 unless told: metrics stay where configured
        web_port=settings.worker_web_port,
        web_in_thread=False,
        store="memory://",  # Faust keeps no table: the state is the CDC loop's
        datadir=str(settings.worker_data_dir),
        topic_partitions=PARTITIONS,
        topic_replication_factor=settings.topic_replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        consumer_group_instance_id=instance_id(settings),
        broker_session_timeout=settings.worker_session_timeout_s,
    )
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    requests = app.topic(settings.score_requests_topic, **raw)
    replies = app.topic(settings.score_replies_topic, **raw)
    recs_requests = app.topic(settings.recs_requests_topic, **raw)
    recs_replies = app.topic(settings.recs_replies_topic, **raw)
    nodes = NodeStates()
    scores: dict[bytes, bytes] = {}  # transaction id -> its TransactionScored record (restored, or decided since)
    policies = PolicySource(settings.policy_file or None)
    present = mapping.present_fields()  # a model trained with more is refused; rules needing more say so
    server = ModelServer(
        ModelRegistry(settings.model_dir),
        settings.model_device,
        settings.model_max_batch,
        settings.model_max_delay_ms / 1000,
        settings.model_reload_s,
        observe=observe_model_batch,
        fields=present,
        threads=settings.model_threads,
    )
    decider = Decider(server, policies, present)
    recs = RecsServer(RecsRegistry(settings.recs_registry_dir()), settings.model_device, settings.model_reload_s)
    recs_risk = RiskParams(max_risk=settings.recs_max_risk)

    def make_producer() -> Producer:
        return Producer(
            confluent_config(
                settings,
                **{
                    "transactional.id": instance_id(settings),  # one per member: a restart fences its old self
                    "linger.ms": LINGER_MS,
                    "compression.type": "lz4",
                    "partitioner": "murmur2_random",  # changelog.py says why
                },
            )
        )

    outputs = TransactionalOutputs(make_producer(), settings, scores)
    quality = attach_observability(
        app,
        versions=lambda: (server.version or NO_MODEL, policies.current.version),
        entries=lambda: {"node-state": len(nodes), "scores": len(scores)},
        report_lag=lambda: cdc.report_lag(),
        cohorts=cohorts(settings.quality_recent_cohort, settings.quality_baseline_cohort),
    )

    async def restore() -> None:
        # Blocking reads on a thread; the CDC loop pushes nothing before this returns.
        started = time.monotonic()

        def read() -> list:
            # Straight from the consumer into the new map: no list of a million records in between.
            nodes.restore((key.decode(), value) for key, value in read_to_end(settings, node_state_topic(settings)))
            return list(read_to_end(settings, settings.scores_topic))

        scored = await asyncio.get_running_loop().run_in_executor(None, read)
        scores.clear()
        scores.update((key, value) for key, value in scored if value is not None)
        try:
            quality.rebuild(scores.items, nodes.get)
        except Exception:  # noqa: BLE001 -- quality metrics must never stop scoring
            log.exception("rebuilding the quality tracker failed; it starts empty")
        log.info("restored %d node states and %d scores in %.1f s", len(nodes), len(scores), time.monotonic() - started)

    order: EventTimeMerger[tuple[str, int]] = EventTimeMerger(settings.worker_max_idle_ms, settings.worker_max_wait_ms)
    pipeline = Pipeline(mapping, settings.decimal_handling_mode, nodes, decider, outputs, order, scores.get, quality)
    cdc = CdcLoop(
        settings,
        pipeline,
        outputs,
        make_producer,
        mapping.topics(settings.topic_prefix),
        restore,
        instance_id(settings),
        beacon=app.beacon,
    )
    app.add_dependency(cdc)

    @app.task
    async def serve_model():
        # Started with the app, so the first model is loading while partitions are assigned;
        # until one is loaded (or none is registered) decisions use rules and lists alone.
        await server.start()
        try:
            await asyncio.Event().wait()  # until the app stops and cancels this task
        finally:
            await server.stop()

    def score_of(transaction_id: int) -> dict | None:
        raw = scores.get(str(transaction_id).encode())
        return None if raw is None else orjson.loads(raw)

    def recent_of(account_id: int) -> list[int] | None:
        state = nodes.get(node_key("Account", account_id))
        return None if state is None else state.recent

    @app.agent(requests)
    async def score_queries(stream):
        async for event in stream.events():
            reply = answer(event.message.value, score_of, recent_of)
            key = reply["request_id"].encode() if reply["request_id"] else event.message.key
            await replies.send(key=key, value=orjson.dumps(reply))
            metrics.QUERIES.labels(reply["status"]).inc()
            metrics.RECORDS_OUT.labels("score_replies").inc()

    @app.task
    async def serve_recommendations():
        # Like serve_model: without a registered recommender, queries are answered model_unavailable.
        await recs.start()
        try:
            await asyncio.Event().wait()
        finally:
            await recs.stop()

    @app.agent(recs_requests)
    async def recommendation_queries(stream):
        # Micro-batches, so the requests that arrived together are ranked by one matrix product.
        async for events in stream.take_events(64, 0.002):
            messages = [e.message for e in events]
            try:
                answers = await answer_batch([m.value for m in messages], nodes, recs, settings.recs_max_k, recs_risk)
            except Exception as err:  # a bug must not stop the agent: every request still gets a reply
                log.exception("answering %d recommendation requests failed", len(messages))
                answers = [error_reply(None, "internal_error", f"{type(err).__name__}: {err}") for _ in messages]
            for message, reply in zip(messages, answers):
                key = reply["request_id"].encode() if reply["request_id"] else message.key
                await recs_replies.send(key=key, value=orjson.dumps(reply))
                metrics.RECORDS_OUT.labels("recs_replies").inc()

    @app.task
    async def graph_sink():
        try:
            await graph_process.supervise(settings)
        except asyncio.CancelledError:
            raise
        except BaseException as err:
            # Without the graph stage the worker would score on while Neo4j silently falls behind:
            # crash instead, so the supervisor restarts it and the sink resumes from its offsets.
            log.exception("graph stage failed; stopping the worker")
            await app.crash(err)

    @app.page("/metrics")
    async def prometheus_metrics(web, request):
        return web.bytes(graph_process.exposition(settings), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    return app
