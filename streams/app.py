"""The Faust application: topics, tables, agents and the worker's web endpoint, built from Settings.

Reading top to bottom is reading the pipeline::

    CDC topics -> decode (bad input -> dead-letter topic)
               -> apply to node state (table ``node-state``, replays skipped per node)
               -> a new transaction: score it -> table ``scores`` (its changelog IS fraud.scores)
                                                 + fraud.alerts unless approved
    CDC topics -> graph sink (own consumer group) -> Neo4j
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

One worker holds all partitions of the state: a transaction reads the states of its account,
merchant, device and IP, which live under other keys. Tables write by key (``use_partitioner``),
so a key has one home partition and a restart restores it exactly; scaling out needs those reads
to cross workers (see README, "Scaling").
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import faust
import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fraudgraph.connectors.dead_letter import DeadLetter
from fraudgraph.connectors.events import TableTruncated
from fraudgraph.connectors.decoder import DECODER_BUG, DecodeError, Tombstone, decode, table_of
from fraudgraph.connectors.mapping import load_mapping
from fraudgraph.kafka_config import faust_credentials
from fraudgraph.models.registry import ModelRegistry
from fraudgraph.models.recommend import RiskParams
from fraudgraph.models.recs_registry import RecsRegistry
from fraudgraph.models.recs_serving import RecsServer
from fraudgraph.models.serving import ModelServer
from fraudgraph.settings import Settings
from fraudgraph.streams import metrics
from fraudgraph.streams.decider import NO_MODEL, Decider
from fraudgraph.streams.observe import attach_observability
from fraudgraph.streams.policy import PolicySource
from fraudgraph.streams.queries import answer
from fraudgraph.streams.recommendations import answer_batch, error_reply
from fraudgraph.streams.scoring import APPROVE, ScoringInput, scored_record
from fraudgraph.streams.tables import acked_table, store_url
from fraudgraph.streams.transport import Consumer, Producer
from fraudgraph.streams.state import NodeState, Source, apply_event, node_key

log = logging.getLogger(__name__)

PARTITIONS = 4  # of the worker's tables and topics (the CDC topics have as many)


class NodeTable:
    """``StateStore`` over a Faust table of JSON bytes (the changelog stays readable by any tool)."""

    def __init__(self, table):
        self.table = table

    def get(self, key: str) -> NodeState | None:
        raw = self.table.get(key.encode())
        return None if raw is None else NodeState.from_json(raw)

    def put(self, state: NodeState) -> None:
        self.table[state.key.encode()] = state.to_json()


def observe_model_batch(size: int, seconds: float, device: str) -> None:
    metrics.MODEL_BATCH_SIZE.labels(device).observe(size)
    metrics.MODEL_INFERENCE_SECONDS.labels(device).observe(seconds)


PROCESSING_ERROR = "processing_error"  # dead-letter reason: decoded fine, but state or scoring raised


def instance_id(settings: Settings) -> str:
    """Static group membership name. It includes the web port because Faust's assignor stores each
    member's URL with its assignment and refuses (a silent hang) a returning member whose URL changed."""
    name = settings.worker_instance or socket.gethostname()
    return f"{settings.worker_id}-{name}-{settings.worker_web_port}"


def worker_topics(settings: Settings) -> dict[str, int]:
    """The topics the worker reads and writes, with their partition counts (created at start if
    missing; the CDC topics have the connector's partition count, ``stack/debezium.py``)."""
    mapping = load_mapping(settings.mapping_file or None)
    return {**{settings.cdc_topic(t): PARTITIONS for t in mapping.tables},
            settings.scores_topic: PARTITIONS, settings.alerts_topic: PARTITIONS,
            settings.score_requests_topic: PARTITIONS, settings.score_replies_topic: PARTITIONS,
            settings.recs_requests_topic: PARTITIONS, settings.recs_replies_topic: PARTITIONS,
            settings.dead_letter_topic: 1}


class WorkerApp(faust.App):
    def _new_transport(self):
        transport = super()._new_transport()
        transport.Consumer, transport.Producer = Consumer, Producer  # streams/transport.py says why
        return transport


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
        consumer_group_instance_id=instance_id(settings),
        broker_session_timeout=settings.worker_session_timeout_s,
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    cdc = app.topic(*[settings.cdc_topic(t) for t in mapping.tables], **raw)
    dead_letters = app.topic(settings.dead_letter_topic, partitions=1, **raw)
    alerts = app.topic(settings.alerts_topic, **raw)
    requests = app.topic(settings.score_requests_topic, **raw)
    replies = app.topic(settings.score_replies_topic, **raw)
    recs_requests = app.topic(settings.recs_requests_topic, **raw)
    recs_replies = app.topic(settings.recs_replies_topic, **raw)
    # bytes keys and values: Faust serialises anything else (str included) as JSON.
    table = {"key_type": bytes, "value_type": bytes, "use_partitioner": True}
    node_table = acked_table(app, "node-state", **table)  # see tables.py: local copy only once in Kafka
    scores = acked_table(app, "scores", **table, changelog_topic=app.topic(
        settings.scores_topic, compacting=True, deleting=False, internal=True, **raw))
    nodes = NodeTable(node_table)
    policies = PolicySource(settings.policy_file or None)
    server = ModelServer(ModelRegistry(settings.model_dir), settings.model_device, settings.model_max_batch,
                         settings.model_max_delay_ms / 1000, settings.model_reload_s, observe=observe_model_batch)
    decider = Decider(server, policies)
    recs = RecsServer(RecsRegistry(settings.recs_registry_dir()), settings.model_device, settings.model_reload_s)
    recs_risk = RiskParams(max_risk=settings.recs_max_risk)
    quality = attach_observability(app, scores=scores, node_table=node_table, nodes=nodes,
                                   versions=lambda: (server.version or NO_MODEL, policies.current.version),
                                   topics=[*cdc.topics, settings.score_requests_topic])

    async def dead_letter(message, reason: str, detail: str) -> None:
        record = DeadLetter(message.key, message.value, reason, detail, message.topic, message.partition, message.offset)
        await dead_letters.send(key=message.key, value=message.value, headers=record.headers())
        metrics.DEAD_LETTERS.labels(reason).inc()
        metrics.RECORDS_OUT.labels("dead_letters").inc()
        log.warning("dead-lettered %s[%s]@%s: %s: %s", message.topic, message.partition, message.offset, reason, detail[:200])

    @app.agent(cdc)
    async def ingest(stream):
        # Micro-batches: state is applied event by event (each transaction's ScoringInput is a
        # snapshot right after its own event), then the batch's transactions are decided together,
        # so the model sees one batch and the rules overlap it. Faust acks a batch's offsets only
        # after this body has finished with it.
        async for events in stream.take_events(settings.worker_batch_max, settings.worker_batch_ms / 1000):
            pending: dict[bytes, tuple] = {}
            for event in events:
                message = event.message
                decoded = await decode_stage(message)
                if decoded is None:
                    continue
                try:
                    scored = state_stage(message, decoded)
                except Exception as err:  # a bug must not stop the stream: the message is kept, with why
                    log.exception("state update failed on %s[%s]@%s", message.topic, message.partition, message.offset)
                    await dead_letter(message, PROCESSING_ERROR, f"{type(err).__name__}: {err}")
                    continue
                if scored is not None and scored[0] not in pending:
                    pending[scored[0]] = (message, *scored[1:])
            if pending:
                await decide_stage(pending)

    async def decode_stage(message):
        """The message's domain event, or None when there is nothing to apply (dead-lettered, tombstone)."""
        table = table_of(message.topic)
        metrics.EVENTS_IN.labels(table).inc()
        started = time.perf_counter()
        try:
            decoded = decode(message.topic, message.value, mapping, settings.decimal_handling_mode, message.key)
        except DecodeError as err:
            await dead_letter(message, err.reason, err.detail)
            return None
        except Exception as err:  # a decoder bug must not stop the stream; the message is kept
            log.exception("decoder failed on %s[%s]@%s", message.topic, message.partition, message.offset)
            await dead_letter(message, DECODER_BUG, f"{type(err).__name__}: {err}")
            return None
        finally:
            metrics.DECODE_SECONDS.observe(time.perf_counter() - started)
        if isinstance(decoded, Tombstone):
            metrics.TOMBSTONES.labels(table).inc()
            return None
        metrics.EVENTS_DECODED.labels(type(decoded).__name__).inc()
        if isinstance(decoded, TableTruncated):
            log.warning("source table of %s was TRUNCATEd at lsn %s: no per-row deletes follow",
                        decoded.entity, decoded.position.lsn)
        return decoded

    def state_stage(message, decoded) -> tuple[bytes, ScoringInput, float] | None:
        """Apply the event; a new, not yet scored transaction comes back as (key, input, state seconds)."""
        source = Source(message.topic, message.partition, message.offset, int((message.timestamp or 0) * 1000))
        started = time.perf_counter()
        applied = apply_event(decoded, source, nodes)
        elapsed = time.perf_counter() - started
        metrics.STATE_SECONDS.observe(elapsed)
        if applied.replayed:
            metrics.REPLAYS_IGNORED.inc(applied.replayed)
        quality.on_applied(decoded, applied.replayed, scores.get)  # a fresh fraud report joins its decision
        tx = applied.transaction
        if tx is None:
            return None
        key = str(tx.transaction_id).encode()
        if key in scores:  # scored before a crash or rebalance: its record is already on fraud.scores
            return None
        return key, ScoringInput(tx, source, {s.key: s for s in applied.touched}), elapsed

    async def decide_stage(pending: dict[bytes, tuple]) -> None:
        inputs = [inp for _, inp, _ in pending.values()]
        started = time.perf_counter()
        try:
            decided = await decider.decide(inputs)
        except Exception as err:  # e.g. a rule bug: keep every message of the batch, with why
            log.exception("deciding a batch of %d failed", len(inputs))
            for message, _, _ in pending.values():
                await dead_letter(message, PROCESSING_ERROR, f"{type(err).__name__}: {err}")
            return
        decided_ms = int(time.time() * 1000)
        batch_ms = round((time.perf_counter() - started) * 1000, 3)
        for (key, (message, inp, state_s)), d in zip(pending.items(), decided):
            record = scored_record(inp, d.verdict, d.model_version, {
                "cdc_append_ms": inp.source.timestamp_ms,
                "decided_ms": decided_ms,
                "state_ms": round(state_s * 1000, 3),
                "decide_ms": batch_ms,  # the batch's model and rules, run concurrently
                "rules_ms": round(d.rules_s * 1000, 3),
                "model_ms": round(d.model_s * 1000, 3),
                "batch": len(inputs),
            })
            value = orjson.dumps(record)
            producing = time.perf_counter()
            if record.decision != APPROVE:
                await alerts.send(key=key, value=value)
                metrics.RECORDS_OUT.labels("alerts").inc()
            scores.put(key, value, message.partition)  # publishes to fraud.scores (tables.py: why this partition)
            metrics.PRODUCE_SECONDS.observe(time.perf_counter() - producing)
            metrics.DECISIONS.labels(record.decision).inc()
            quality.on_scored(inp.transaction.transaction_id, inp.transaction.position.ts_ms, record.decision, inp.states)

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
        from fraudgraph.streams.graph_sink import run_graph_sink

        try:
            await run_graph_sink(settings, mapping, list(cdc.topics))
        except asyncio.CancelledError:
            raise
        except BaseException as err:
            # Without the graph stage the worker would score on while Neo4j silently falls behind:
            # crash instead, so the supervisor restarts it and the sink resumes from its offsets.
            log.exception("graph stage failed; stopping the worker")
            await app.crash(err)

    @app.page("/metrics")
    async def prometheus_metrics(web, request):
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    return app
