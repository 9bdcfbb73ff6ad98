"""The Faust application: topics, tables, agents and the worker's web endpoint, built from Settings.

Reading top to bottom is reading the wiring; ``pipeline.py`` is the hot path itself::

    CDC topics -> decode (bad input -> dead-letter topic)
               -> event-time order across partitions (event_time.py; flow.py: acks)
               -> apply to node state (in memory, replays skipped per node; changelog.py)
               -> a new transaction: score it -> table ``scores`` (its changelog IS fraud.scores)
                                                 + fraud.alerts unless approved
    CDC topics -> graph sink (own process, own consumer group; graph_process.py) -> Neo4j
    fraud.score-requests -> answer from the tables -> fraud.score-replies
    recs.requests -> account state -> recommender (+ merchants' fraud risk) -> recs.replies

Why the scores table's changelog is the ``fraud.scores`` topic itself: Faust commits input offsets
after table writes, so a crash can re-deliver events whose effects are already durable. Because
the score record and the "this transaction is scored" marker are one and the same Kafka record, a
replayed transaction is re-scored exactly when its score did not reach Kafka, so every transaction
gets exactly one record on ``fraud.scores``, with at-least-once processing and no Kafka
transactions (faust-streaming's exactly_once mode is not reliable: faust-streaming issues #517,
#323). Alerts are sent before the score, so an alert is never lost; after a crash between the two
it may be sent twice (consumers dedupe by transaction id).

One worker holds all the node states: a transaction reads the states of its account, merchant,
device and IP, which live under other keys. Each assignment restores them whole from the changelog,
so a member taking partitions over starts from what the other wrote at its last checkpoint;
scaling out needs those reads to cross workers (see README, "Scaling").
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any

import faust
import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from fraudgraph.connectors.dead_letter import DeadLetter
from fraudgraph.connectors.mapping import load_mapping
from fraudgraph.kafka_config import faust_credentials
from fraudgraph.models.recommend import RiskParams
from fraudgraph.models.recs_registry import RecsRegistry
from fraudgraph.models.recs_serving import RecsServer
from fraudgraph.models.registry import ModelRegistry
from fraudgraph.models.serving import ModelServer
from fraudgraph.settings import Settings
from fraudgraph.streams import graph_process, metrics
from fraudgraph.streams.changelog import NodeStateChangelog, node_state_topic
from fraudgraph.streams.decider import NO_MODEL, Decider
from fraudgraph.streams.event_time import EventTimeMerger
from fraudgraph.streams.flow import OrderFlow
from fraudgraph.streams.node_states import NodeStates
from fraudgraph.streams.observe import attach_observability
from fraudgraph.streams.pipeline import Pipeline, Record
from fraudgraph.streams.policy import PolicySource
from fraudgraph.streams.quality_join import cohorts
from fraudgraph.streams.queries import answer
from fraudgraph.streams.recommendations import answer_batch, error_reply
from fraudgraph.streams.scoring import APPROVE, TransactionScored
from fraudgraph.streams.state import NodeState, node_key
from fraudgraph.streams.tables import acked_table, store_url
from fraudgraph.streams.transport import Consumer, Producer

log = logging.getLogger(__name__)

PARTITIONS = 4  # of the worker's tables and topics (the CDC topics have as many)
PRODUCER_LINGER_S = 0.005


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


class WorkerApp(faust.App):
    flow: OrderFlow | None = None

    def _new_transport(self):
        transport = super()._new_transport()
        transport.Consumer, transport.Producer = Consumer, Producer  # streams/transport.py says why
        return transport

    async def _consumer_wait_empty(self, consumer, logger) -> None:
        # A rebalance or stop waits for every delivered message to be acked; those waiting for
        # event-time order are given back instead (re-read from the committed offsets).
        if self.flow is not None:
            await self.flow.give_back()
        await super()._consumer_wait_empty(consumer, logger)


def create_app(settings: Settings) -> faust.App:
    mapping = load_mapping(settings.mapping_file or None)
    app = WorkerApp(
        settings.worker_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        broker_credentials=faust_credentials(settings),  # SASL/TLS per the kafka_* settings
        web_host=settings.worker_web_host,
        web_bind=settings.worker_web_host,  # Faust binds 0.0.0.0 unless told: metrics stay where configured
        web_port=settings.worker_web_port,
        web_in_thread=False,
        store=store_url(settings.worker_store),
        datadir=str(settings.worker_data_dir),
        topic_partitions=PARTITIONS,
        topic_replication_factor=settings.topic_replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Records sent within 5 ms go in one produce request (Faust's default sends each alone as
        # soon as the sender is idle): fewer, larger requests for the broker, for up to 5 ms more
        # before a score is durable. Measured +23-28% drain in paired runs once, within the noise
        # another time (benchmarks/results/performance.md).
        producer_linger=PRODUCER_LINGER_S,
        consumer_group_instance_id=instance_id(settings),
        broker_session_timeout=settings.worker_session_timeout_s,
    )
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    cdc = app.topic(*mapping.topics(settings.topic_prefix), **raw)
    dead_letters = app.topic(settings.dead_letter_topic, partitions=1, **raw)
    alerts = app.topic(settings.alerts_topic, **raw)
    requests = app.topic(settings.score_requests_topic, **raw)
    replies = app.topic(settings.score_replies_topic, **raw)
    recs_requests = app.topic(settings.recs_requests_topic, **raw)
    recs_replies = app.topic(settings.recs_replies_topic, **raw)
    # bytes keys and values: Faust serialises anything else (str included) as JSON.
    table: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "use_partitioner": True}
    scores = acked_table(
        app,
        "scores",
        **table,
        changelog_topic=app.topic(settings.scores_topic, compacting=True, deleting=False, internal=True, **raw),
    )
    nodes = NodeStates()
    changelog = NodeStateChangelog(settings, PRODUCER_LINGER_S * 1000)
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
    )
    decider = Decider(server, policies, present)
    recs = RecsServer(RecsRegistry(settings.recs_registry_dir()), settings.model_device, settings.model_reload_s)
    recs_risk = RiskParams(max_risk=settings.recs_max_risk)
    quality = attach_observability(
        app,
        scores=scores,
        nodes=nodes,
        restored=lambda: flow.restored.wait(),
        versions=lambda: (server.version or NO_MODEL, policies.current.version),
        topics=[*cdc.topics, settings.score_requests_topic],
        cohorts=cohorts(settings.quality_recent_cohort, settings.quality_baseline_cohort),
    )

    class KafkaSinks:
        def __init__(self) -> None:
            self.unsynced: list = []  # score sends not yet known to be durable

        async def dead_letter(self, record: Record, reason: str, detail: str) -> None:
            letter = DeadLetter(record.key, record.value, reason, detail, record.topic, record.partition, record.offset)
            await dead_letters.send(key=record.key, value=record.value, headers=letter.headers())

        async def emit(self, record: Record, scored: TransactionScored) -> None:
            key, value = str(scored.transaction_id).encode(), orjson.dumps(scored)
            if scored.decision != APPROVE:  # before the score: an alert is never lost (app docstring)
                await alerts.send(key=key, value=value)
                metrics.RECORDS_OUT.labels("alerts").inc()
            # Publishes to fraud.scores (tables.py: why this partition).
            self.unsynced.append(scores.put(key, value, record.partition))

        async def sync(self) -> None:
            sent, self.unsynced = self.unsynced, []
            if sent:
                await asyncio.gather(*sent)

        async def save(self, states: list[NodeState]) -> None:
            await changelog.write(states)

        def done(self, record: Record) -> None:
            record.handle.ack()  # the message's last reference: Faust may commit its offset now

    async def restore() -> None:
        # Blocking reads on a thread; Faust awaits this before it resumes any partition.
        started = time.monotonic()
        records = await asyncio.get_running_loop().run_in_executor(None, lambda: list(changelog.read()))
        nodes.restore(records)
        log.info(
            "restored %d node states from %d changelog records in %.1f s",
            len(nodes),
            len(records),
            time.monotonic() - started,
        )

    order: EventTimeMerger[tuple[str, int]] = EventTimeMerger(settings.worker_max_idle_ms, settings.worker_max_wait_ms)
    pipeline = Pipeline(
        mapping, settings.decimal_handling_mode, nodes, decider, KafkaSinks(), order, scores.get, quality
    )
    flow = OrderFlow(
        app,
        pipeline,
        cdc.topics,
        settings.worker_batch_max,
        settings.worker_order_buffer,
        settings.worker_checkpoint_ms,
        settings.worker_checkpoint_records,
        restore,
    )

    @app.agent(cdc)
    async def ingest(stream):
        # Faust acks a take_events batch when its body returns; each message gets one more
        # reference here, released by the pipeline when its event is applied and decided, so an
        # event still waiting for event-time order is never committed (flow.py).
        async for events in stream.take_events(settings.worker_batch_max, settings.worker_batch_ms / 1000):
            await flow.deliver(events)

    @app.task
    async def release_waiting():
        # What waits on a silent partition is released when its bound passes, not only when
        # the next event arrives.
        while True:
            await asyncio.sleep(max(settings.worker_max_idle_ms / 2000, 0.005))
            await flow.tick()

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
