"""Security configuration on real servers: every Kafka client authenticates with SASL/SCRAM over TLS
(with a client certificate) from the settings alone, wrong credentials are refused, Neo4j runs with
authentication on, and a worker running with all of it keeps every secret out of its log, its
HTTP endpoints (metrics included) and its environment (secrets come from files).

The secured broker and Neo4j are private (``tests/secured_services.py``); the shared stack is
untouched."""

from __future__ import annotations

import asyncio
import json
import random
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import neo4j
import pytest
from aiokafka import AIOKafkaConsumer
from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

from fraudgraph.graph.writer import GraphWriter
from fraudgraph.kafka_config import aiokafka_options, confluent_config
from fraudgraph.streams.topics import ensure_topics

from support.stack import scrape

pytestmark = [pytest.mark.integration, pytest.mark.slow]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "debezium" / "precise-schema"


def read(settings, topic: str, want: int, timeout: float = 60.0) -> list:
    consumer = Consumer(
        confluent_config(settings, **{"group.id": f"t-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"})
    )
    consumer.subscribe([topic])
    got, deadline = [], time.monotonic() + timeout
    try:
        while len(got) < want and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                got.append(msg)
    finally:
        consumer.close()
    return got


async def read_with_aiokafka(settings, topic: str, want: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic, group_id=f"t-{uuid.uuid4().hex}", auto_offset_reset="earliest", **aiokafka_options(settings)
    )
    await consumer.start()
    try:
        got: list[bytes] = []
        async with asyncio.timeout(60):
            while len(got) < want:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got += [r.value for r in records]
        return got
    finally:
        await consumer.stop()


def refused(settings) -> bool:
    try:
        AdminClient(confluent_config(settings, log_level=0)).list_topics(timeout=8)
    except KafkaException:
        return True
    return False


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_every_client_authenticates_with_scram_over_tls(stack, secured_kafka, mechanism):
    s = secured_kafka.client(stack, mechanism)
    topic = f"secured-{mechanism.lower()}-{uuid.uuid4().hex[:8]}"
    assert ensure_topics(s, {topic: 2}) == [topic]  # AdminClient
    producer = Producer(confluent_config(s))
    for i in range(5):
        producer.produce(topic, key=str(i).encode(), value=f"v{i}".encode())
    assert producer.flush(30) == 0
    assert sorted(m.value() for m in read(s, topic, 5)) == [f"v{i}".encode() for i in range(5)]
    assert sorted(asyncio.run(read_with_aiokafka(s, topic, 5))) == [f"v{i}".encode() for i in range(5)]


def test_wrong_or_missing_credentials_are_refused(stack, secured_kafka):
    good = secured_kafka.client(stack)
    assert not refused(good)
    assert refused(good.replace(kafka_sasl_password="not-the-password"))
    assert refused(good.replace(kafka_sasl_username="mallory"))
    assert refused(
        good.replace(kafka_ssl_certfile="", kafka_ssl_keyfile="", kafka_ssl_key_password="")
    )  # no client cert
    assert refused(
        good.replace(kafka_ssl_cafile=str(secured_kafka.pki.client_cert))
    )  # a CA that did not sign the broker
    assert refused(good.replace(kafka_security_protocol="PLAINTEXT"))

    async def aiokafka_with_wrong_password():
        consumer = AIOKafkaConsumer(
            "any", **aiokafka_options(good.replace(kafka_sasl_password="nope")), request_timeout_ms=5000
        )
        try:
            await consumer.start()
        finally:
            await consumer.stop()

    with pytest.raises(Exception) as err:
        asyncio.run(aiokafka_with_wrong_password())
    assert "auth" in repr(err.value).lower() or "bootstrap" in repr(err.value).lower(), err.value


def test_neo4j_with_authentication_on(secured_neo4j):
    assert secured_neo4j.neo4j_auth is not None
    with pytest.raises(neo4j.exceptions.AuthError):
        with neo4j.GraphDatabase.driver(secured_neo4j.neo4j_uri, auth=("neo4j", "wrong-password")) as driver:
            driver.verify_connectivity()

    async def write_and_fail():
        async with GraphWriter.from_settings(secured_neo4j) as writer:  # the configured password works
            await writer.flush()
        wrong = GraphWriter.from_settings(secured_neo4j.replace(neo4j_password="wrong-password"))
        try:
            with pytest.raises(neo4j.exceptions.AuthError):
                await wrong.start()
        finally:
            await wrong.abort()

    asyncio.run(write_and_fail())


def _fixture_messages(prefix: str) -> list[tuple[str, bytes, bytes]]:
    """Captured change events with ids of their own (the private Neo4j is shared within the session)."""
    base = random.randrange(10**12, 9 * 10**12, 10**8)
    device = f"dev-{base}"
    rows = {
        "customers.c": {"id": base + 1},
        "accounts.c": {"id": base + 2, "customer_id": base + 1},
        "merchants.c": {"id": base + 3},
        "devices.c": {"id": device},
        "transactions.c": {"id": base + 4, "account_id": base + 2, "merchant_id": base + 3, "device_id": device},
    }
    out = []
    for stem, after in rows.items():
        fx = json.loads((FIXTURES / f"{stem}.json").read_text())
        doc = json.loads(fx["value"])
        doc["payload"]["after"].update(after)
        key = json.dumps({"payload": {"id": after["id"]}}).encode()
        out.append((fx["topic"].replace("bank.", f"{prefix}.", 1), key, json.dumps(doc).encode()))
    return out


def _http(port: int, path: str) -> bytes:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10).read()
    except urllib.error.HTTPError as err:
        return err.read()


def test_worker_on_secured_kafka_and_neo4j_keeps_secrets_out_of_logs_metrics_and_environment(
    stack, secured_kafka, secured_neo4j, worker_process, tmp_path
):
    client = secured_kafka.client(stack)
    run = uuid.uuid4().hex[:8]
    secrets = {
        "KAFKA_SASL_PASSWORD": client.kafka_sasl_password,
        "KAFKA_SSL_KEY_PASSWORD": client.kafka_ssl_key_password,
        "NEO4J_PASSWORD": secured_neo4j.neo4j_password,
    }
    env = {f"FRAUDGRAPH_{name}_FILE": str(tmp_path / name.lower()) for name in secrets}
    for name, value in secrets.items():
        (tmp_path / name.lower()).write_text(value + "\n")
    prefix, replies_topic = f"sec{run}", f"sec.replies.{run}"
    env.update(
        {
            "FRAUDGRAPH_KAFKA_BOOTSTRAP": client.kafka_bootstrap,
            "FRAUDGRAPH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "FRAUDGRAPH_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "FRAUDGRAPH_KAFKA_SASL_USERNAME": client.kafka_sasl_username,
            "FRAUDGRAPH_KAFKA_SSL_CAFILE": client.kafka_ssl_cafile,
            "FRAUDGRAPH_KAFKA_SSL_CERTFILE": client.kafka_ssl_certfile,
            "FRAUDGRAPH_KAFKA_SSL_KEYFILE": client.kafka_ssl_keyfile,
            "FRAUDGRAPH_NEO4J_URI": secured_neo4j.neo4j_uri,
            "FRAUDGRAPH_TOPIC_PREFIX": prefix,
            "FRAUDGRAPH_SCORES_TOPIC": f"sec.scores.{run}",
            "FRAUDGRAPH_SCORE_REQUESTS_TOPIC": f"sec.requests.{run}",
            "FRAUDGRAPH_SCORE_REPLIES_TOPIC": replies_topic,
            "FRAUDGRAPH_ALERTS_TOPIC": f"sec.alerts.{run}",
            "FRAUDGRAPH_DEAD_LETTER_TOPIC": f"sec.dlq.{run}",
        }
    )
    worker = worker_process(**env)

    # Traffic through every client the worker has: Faust (ingest, scores, queries), aiokafka (graph sink).
    producer = Producer(confluent_config(client))
    messages = _fixture_messages(prefix)
    for topic, key, value in messages:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0
    tx_id = json.loads(messages[-1][2])["payload"]["after"]["id"]
    assert [json.loads(m.value())["transaction_id"] for m in read(client, f"sec.scores.{run}", 1, 120)] == [tx_id]
    producer.produce(
        f"sec.requests.{run}", key=b"q", value=json.dumps({"request_id": f"q-{run}", "transaction_id": tx_id}).encode()
    )
    assert producer.flush(30) == 0
    replies = [json.loads(m.value()) for m in read(client, replies_topic, 1, 60)]
    assert [(r["request_id"], r["status"]) for r in replies] == [(f"q-{run}", "ok")]
    with neo4j.GraphDatabase.driver(secured_neo4j.neo4j_uri, auth=secured_neo4j.neo4j_auth) as driver:
        deadline = time.monotonic() + 60
        while not driver.execute_query(
            "MATCH (t:Transaction {id: $id})<-[:INITIATED]-(:Account) RETURN count(t) AS n", id=tx_id
        ).records[0]["n"]:
            assert time.monotonic() < deadline, "the graph sink did not write the transaction to the secured Neo4j"
            time.sleep(1)
    metrics = scrape(worker["port"])
    assert metrics['fraudgraph_score_queries_total{status="ok"}'] == 1

    # Where a secret could leak: the log, every HTTP endpoint, the process environment and command line.
    log = worker["log"].read_bytes()
    assert b"Authenticated as fraudgraph-worker via SCRAM-SHA-512" in log
    settings_line = next(line for line in log.splitlines() if b"starting worker with settings" in line)
    for name in secrets:
        assert f"'{name.lower()}': '***'".encode() in settings_line  # the settings are logged, masked
    pid = worker["proc"].pid
    exposed = {
        "log": log,
        "environment": Path(f"/proc/{pid}/environ").read_bytes(),
        "command line": Path(f"/proc/{pid}/cmdline").read_bytes(),
        **{f"GET {path}": _http(worker["port"], path) for path in ("/metrics", "/", "/stats/", "/router/")},
    }
    leaks = [
        f"{name} in {where}"
        for name, value in secrets.items()
        for where, text in exposed.items()
        if value.encode() in text
    ]
    assert leaks == []
    assert worker["proc"].poll() is None
