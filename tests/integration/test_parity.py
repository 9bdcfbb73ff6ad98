"""Parity on the real stack: a worker consuming a skewed CDC backlog from Kafka publishes, for every
transaction, the decision the offline replay makes from the same log (same model, same policy).

The log is a simulator run with fraud patterns and reports delayed by minutes to hours, written as
Debezium events in the worst order a catch-up meets: every fraud report first, then one
transactions partition in full (hours of event time ahead of the others), then the rest. Before
event-time ordering the reports were applied before their transactions and the ahead partition's
payments were scored on histories missing the others' earlier events."""

import asyncio
import json
from dataclasses import asdict
import time
import zlib

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from fraudgraph.kafka_config import confluent_config
from fraudgraph.models.registry import ModelRegistry
from fraudgraph.models.serving import ModelServer
from fraudgraph.stack.simulator.config import SimConfig
from fraudgraph.streams.decider import Decider
from fraudgraph.streams.pipeline import Record
from fraudgraph.streams.policy import PolicySource
from fraudgraph.streams.replay import decoded, replay_decisions, simulator_records
from fraudgraph.connectors.events import TransactionCreated

from conftest import TopicReader, cdc_topics, isolated_run
from test_observability import register_untrained_model

pytestmark = pytest.mark.integration
PARTITIONS = 4


def skewed_backlog(records):
    """(topic, partition, key, value) in the order they are produced: reports, one partition, the rest."""
    placed = [(t, zlib.crc32(k or b"") % PARTITIONS, k, v) for t, k, v in records]
    reports = [r for r in placed if r[0].endswith(".fraud_reports")]
    ahead = [r for r in placed if r[0].endswith(".transactions") and r[1] == 0]
    rest = [r for r in placed if r not in reports and r not in ahead]
    return reports + ahead + rest


def read_log(settings) -> list[Record]:
    consumer = Consumer(confluent_config(settings, **{"group.id": f"{settings.worker_id}-check", "enable.auto.commit": False}))
    out = []
    try:
        for topic in cdc_topics(settings):
            for p in range(PARTITIONS):
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high <= low:
                    continue
                consumer.assign([TopicPartition(topic, p, low)])
                while not out or out[-1].topic != topic or out[-1].partition != p or out[-1].offset + 1 < high:
                    m = consumer.poll(10)
                    assert m is not None and not m.error(), m and m.error()
                    out.append(Record(m.topic(), m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1]))
    finally:
        consumer.close()
    return out


async def offline_decisions(log, settings, model_dir):
    server = ModelServer(ModelRegistry(model_dir), "cpu", reload_s=3600)
    await server.start()
    try:
        return await replay_decisions(log, settings, Decider(server, PolicySource(None)))
    finally:
        await server.stop()


def essence(d: dict) -> tuple:
    return (d["decision"], round(d["score"], 5), [r["code"] for r in d["reasons"]], d["model_version"],
            d["state_versions"])


def test_a_skewed_backlog_is_decided_as_the_offline_replay(stack, worker_process, tmp_path):
    env, settings = isolated_run(stack, "parity")
    model_dir = tmp_path / "models"
    version = register_untrained_model(model_dir)
    sim = SimConfig(customers=50, duration_s=10 * 3600, fraud_rate=0.06, seed=11, id_base=int(time.time()) * 1000,
                    report_delay_s=(600, 4 * 3600))
    records = list(simulator_records(sim, settings))
    producer = Producer(confluent_config(settings, **{"enable.idempotence": True}))
    for topic, partition, key, value in skewed_backlog(records):
        producer.produce(topic, key=key, value=value, partition=partition)
    assert producer.flush(30) == 0
    transactions = sum(isinstance(e, TransactionCreated) for e in decoded(records, settings))
    # Started on the complete backlog: live production order is parity up to worker_max_idle_ms,
    # which a producer writing one partition ahead on purpose would exceed.
    worker_process(FRAUDGRAPH_MODEL_DIR=str(model_dir), **env)

    reader = TopicReader(settings, settings.scores_topic)
    try:
        messages = reader.read_until(lambda ms: len({m.key() for m in ms}) >= transactions, timeout=240)
        messages += reader.read_until(lambda _: False, timeout=2)
    finally:
        reader.close()
    live = {}
    for m in messages:
        record = json.loads(m.value())
        assert record["transaction_id"] not in live, "scored twice"
        live[record["transaction_id"]] = record

    offline = asyncio.run(offline_decisions(read_log(settings), settings, model_dir))
    assert len(offline) == len(live) == transactions > 300
    assert sum(s.decision != "approve" for s in offline.values()) > 0
    assert {r["model_version"] for r in live.values()} == {version}
    differing = [t for t, s in offline.items() if essence(asdict(s)) != essence(live[t])]
    assert not differing, f"{len(differing)} of {len(offline)} decided unlike the offline replay, e.g. {differing[:5]}"
