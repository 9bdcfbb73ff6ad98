"""Hostile input on the real stack.

* A live worker gets a few hundred hypothesis-generated hostile CDC messages (a fixed, derandomised
  set) on its CDC topics, and hostile score and recommendation requests: it stays up, every message
  the decoder rejects is on the dead-letter topic with the decoder's reason and its original bytes
  (found by topic/partition/offset), every other message is counted as applied (lost = 0), the graph
  stage consumes all of it, every request gets exactly one reply, and RSS stays bounded.
* Strings that look like Cypher or JSON injection travel the real path (PostgreSQL -> Debezium ->
  Kafka -> worker -> Neo4j) and come back verbatim from Neo4j (parameterised reads), from the score
  record and from a score reply; NUL bytes, which PostgreSQL's text cannot hold, go the same way
  from Kafka in valid change events.

The worker's Neo4j is the private one with authentication on (``secured_neo4j``), so fuzzed ids
cannot touch the shared graph; all its topics (outputs, dead letters, queries) are its own.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import Counter
from pathlib import Path

import neo4j
import orjson
import psycopg
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from fraudgraph.connectors.dead_letter import DeadLetter
from fraudgraph.connectors.decoder import REASONS, DecodeError, Tombstone, decode
from fraudgraph.connectors.mapping import load_mapping
from fraudgraph.streams.app import worker_topics
from fraudgraph.streams.graph_sink import graph_group
from fraudgraph.streams.queries import answer
from fraudgraph.streams.topics import ensure_topics

from support.hostile import JSON_VALUES, damaged_bytes, dumps, mutated_envelopes, recs_requests, requests
from support.stack import TopicReader, cdc_topics, end_offset, scrape

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MAPPING = load_mapping()
N_CDC, N_REQUESTS, N_RECS = 300, 100, 60
MAX_SENT_BYTES = 900_000  # producer and broker stop at ~1 MB; bigger messages are the unit tests' (too_large)
RSS_GROWTH_LIMIT_MIB = 256
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "debezium" / "precise-schema"
HOSTILE = {
    "full_name": 'Robert\'}) DETACH DELETE n // "},{"admin":true}',
    "email": '"},{"admin":true,"x":"$param"}@example.test',
    "device": "dev-`Device`-$param-x'}) MATCH (n) DETACH DELETE n //",
    "ip": "10.0.0.1'}) MATCH (n) SET n.pwned = true //",
    "merchant": "Café ${x} */ RETURN 1 /* \\u0000 `m`",
    "user_agent": "Mozilla/5.0 (x'}); CALL dbms.killQueries([]) //)",
}


def generated(strategy, n: int) -> list:
    """``n`` examples of a strategy, the same on every run (derandomised, no example database)."""
    out: list = []

    @hsettings(
        max_examples=n,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def gather(example):
        out.append(example)

    gather()
    return out


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB: now and its peak."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def own_topics(run: str) -> dict[str, str]:
    """Environment giving a worker its own output, dead-letter and query topics."""
    return {
        "FRAUDGRAPH_SCORES_TOPIC": f"hostile.scores.{run}",
        "FRAUDGRAPH_ALERTS_TOPIC": f"hostile.alerts.{run}",
        "FRAUDGRAPH_DEAD_LETTER_TOPIC": f"hostile.dlq.{run}",
        "FRAUDGRAPH_SCORE_REQUESTS_TOPIC": f"hostile.requests.{run}",
        "FRAUDGRAPH_SCORE_REPLIES_TOPIC": f"hostile.replies.{run}",
        "FRAUDGRAPH_RECS_REQUESTS_TOPIC": f"hostile.recs-requests.{run}",
        "FRAUDGRAPH_RECS_REPLIES_TOPIC": f"hostile.recs-replies.{run}",
    }


def neo4j_env(secured) -> dict[str, str]:
    return {"FRAUDGRAPH_NEO4J_URI": secured.neo4j_uri, "FRAUDGRAPH_NEO4J_PASSWORD": secured.neo4j_password}


def expected_outcome(topic: str, value: bytes | None, key: bytes | None, mode: str) -> str:
    try:
        event = decode(topic, value, MAPPING, mode, key)
    except DecodeError as err:
        return err.reason
    return "tombstone" if isinstance(event, Tombstone) else "event"


def injection_envelopes(prefix: str, base: int) -> tuple[list[tuple[str, bytes, bytes]], dict]:  # (topic, value, key)
    """Valid change events whose strings hold injection-looking text and NUL bytes (legal in Kafka
    and Neo4j, not in PostgreSQL), with ids of their own."""
    strings = {k: v + "\x00end" for k, v in HOSTILE.items()}
    ids = {"customer": base + 1, "account": base + 2, "merchant": base + 3, "transaction": base + 4}
    rows = {
        "customers.c": {"id": ids["customer"], "full_name": strings["full_name"], "email": strings["email"]},
        "accounts.c": {"id": ids["account"], "customer_id": ids["customer"]},
        "merchants.c": {"id": ids["merchant"], "name": strings["merchant"]},
        "devices.c": {"id": strings["device"], "user_agent": strings["user_agent"]},
        "transactions.c": {
            "id": ids["transaction"],
            "account_id": ids["account"],
            "merchant_id": ids["merchant"],
            "device_id": strings["device"],
            "ip": strings["ip"],
        },
    }
    out = []
    for stem, after in rows.items():
        fx = json.loads((FIXTURES / f"{stem}.json").read_text())
        doc = json.loads(fx["value"])
        doc["payload"]["after"].update(after)
        key = json.dumps({"payload": {"id": after["id"]}}).encode()
        out.append((fx["topic"].replace("bank.", f"{prefix}.", 1), json.dumps(doc).encode(), key))
    return out, {"strings": strings, "ids": ids}


def read_back(secured, ids: dict) -> dict:
    """What Neo4j holds for the injection rows, read with parameters only."""
    with neo4j.GraphDatabase.driver(secured.neo4j_uri, auth=secured.neo4j_auth) as driver:
        records = driver.execute_query(
            "MATCH (t:Transaction {id: $tx}) "
            "OPTIONAL MATCH (a:Account)-[:INITIATED]->(t) OPTIONAL MATCH (c:Customer)-[:OWNS]->(a) "
            "OPTIONAL MATCH (t)-[:PAYS]->(m:Merchant) OPTIONAL MATCH (t)-[:USING_DEVICE]->(d:Device) "
            "OPTIONAL MATCH (t)-[:FROM_IP]->(ip:IP) "
            "RETURN c.full_name AS full_name, c.email AS email, m.name AS merchant, d.id AS device, "
            "d.user_agent AS user_agent, ip.address AS ip",
            tx=ids["transaction"],
        ).records
    return records[0].data() if records else {}


# ---------------------------------------------------------------------------------------------
# 1. A live worker under hostile traffic
# ---------------------------------------------------------------------------------------------


def test_live_worker_under_fuzzed_cdc_and_queries_loses_nothing_and_answers_everything(
    stack, worker_process, secured_neo4j
):
    run = uuid.uuid4().hex[:8]
    prefix = f"hostile{run}"
    env = {
        "FRAUDGRAPH_TOPIC_PREFIX": prefix,
        "FRAUDGRAPH_WORKER_ID": f"test-hostile-{run}",
        **own_topics(run),
        **neo4j_env(secured_neo4j),
    }
    settings = stack.replace(
        topic_prefix=prefix,
        worker_id=env["FRAUDGRAPH_WORKER_ID"],
        dead_letter_topic=env["FRAUDGRAPH_DEAD_LETTER_TOPIC"],
        score_requests_topic=env["FRAUDGRAPH_SCORE_REQUESTS_TOPIC"],
        score_replies_topic=env["FRAUDGRAPH_SCORE_REPLIES_TOPIC"],
        scores_topic=env["FRAUDGRAPH_SCORES_TOPIC"],
        alerts_topic=env["FRAUDGRAPH_ALERTS_TOPIC"],
        recs_requests_topic=env["FRAUDGRAPH_RECS_REQUESTS_TOPIC"],
        recs_replies_topic=env["FRAUDGRAPH_RECS_REPLIES_TOPIC"],
    )
    ensure_topics(settings, worker_topics(settings))
    topics = cdc_topics(settings)

    # The hostile set: generated before the worker starts, identical on every run.
    on_our_topic = st.sampled_from(topics)
    cdc = generated(
        st.one_of(
            mutated_envelopes().map(lambda c: (c[0].replace("bank.", f"{prefix}.", 1), c[1], c[3])),
            damaged_bytes().map(lambda c: (c[0].replace("bank.", f"{prefix}.", 1), c[1], c[3])),
            st.tuples(on_our_topic, st.binary(max_size=2000), st.none() | st.binary(max_size=40)),
            st.tuples(on_our_topic, JSON_VALUES.map(dumps), st.none() | st.binary(max_size=40)),
        ),
        N_CDC,
    )
    base = random.randrange(10**12, 9 * 10**12, 10**8)
    injections, injected = injection_envelopes(prefix, base)
    cdc = [c for c in cdc if c[1] is None or len(c[1]) <= MAX_SENT_BYTES] + injections
    assert all(expected_outcome(t, v, k, stack.decimal_handling_mode) == "event" for t, v, k in injections)

    def sendable(raws):
        return [r for r in raws if r is None or len(r) <= MAX_SENT_BYTES]

    score_requests = sendable(generated(st.none() | st.binary(max_size=300) | requests(), N_REQUESTS))
    rec_requests = sendable(generated(st.none() | st.binary(max_size=300) | recs_requests(), N_RECS))

    worker = worker_process(**env)
    time.sleep(5)  # let it settle after start-up (model server, rebalance) before the baseline
    rss_before, _ = rss_mib(worker["proc"].pid)

    # librdkafka's default batch limit stays under the broker's message.max.bytes: a bigger one would
    # have whole batches refused.
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "linger.ms": 5})
    positions: dict[int, tuple[str, int, int]] = {}
    failed: list = []

    def delivered(i=None):
        def callback(err, msg):
            if err is not None:
                failed.append(err)
            elif i is not None:
                positions[i] = (msg.topic(), msg.partition(), msg.offset())

        return callback

    for i, (topic, value, key) in enumerate(cdc):
        producer.produce(topic, key=key, value=value, on_delivery=delivered(i))
        producer.poll(0)
    for i, raw in enumerate(score_requests):
        producer.produce(settings.score_requests_topic, key=f"{run}-q{i}".encode(), value=raw, on_delivery=delivered())
    for i, raw in enumerate(rec_requests):
        producer.produce(settings.recs_requests_topic, key=f"{run}-r{i}".encode(), value=raw, on_delivery=delivered())
    assert producer.flush(60) == 0 and failed == [] and len(positions) == len(cdc)

    expected = [expected_outcome(t, v, k, stack.decimal_handling_mode) for t, v, k in cdc]
    outcomes = Counter(expected)
    rejected = {positions[i]: (expected[i], cdc[i][1]) for i in range(len(cdc)) if expected[i] in REASONS}
    n_events = outcomes["event"]

    # Every rejected message is dead-lettered, with the decoder's reason and its original bytes.
    dlq = TopicReader(stack, settings.dead_letter_topic)
    try:
        letters = dlq.read_until(lambda ms: len(ms) >= len(rejected), timeout=180)
        letters += dlq.read_until(lambda _: False, timeout=5)  # anything more: processing errors (or duplicates)
    finally:
        dlq.close()
    found = {}
    for m in letters:
        letter = DeadLetter.from_headers(m.key(), m.value(), m.headers())
        found.setdefault((letter.topic, letter.partition, letter.offset), []).append(letter)
    assert all(len(v) == 1 for v in found.values()), "a message was dead-lettered twice"
    missing = [pos for pos in rejected if pos not in found]
    assert missing == []
    for pos, (reason, value) in rejected.items():
        assert (found[pos][0].reason, found[pos][0].value) == (reason, value), pos
    # Anything else there was decoded fine and then failed in state or scoring: kept, with why.
    others = [v[0] for pos, v in found.items() if pos not in rejected]
    assert all(letter.reason == "processing_error" for letter in others), [(x.reason, x.detail) for x in others]
    sent_events = {positions[i] for i in range(len(cdc)) if expected[i] == "event"}
    assert all((x.topic, x.partition, x.offset) in sent_events for x in others)

    # Everything else was applied: decoded events and tombstones add up to what was sent (lost = 0).
    deadline = time.monotonic() + 120
    while True:
        m = scrape(worker["port"])
        decoded = sum(v for k, v in m.items() if k.startswith("fraudgraph_events_decoded_total"))
        if decoded >= n_events or time.monotonic() > deadline:
            break
        time.sleep(1)
    tombstones = sum(v for k, v in m.items() if k.startswith("fraudgraph_tombstones_total"))
    dead = sum(v for k, v in m.items() if k.startswith("fraudgraph_dead_letters_total"))
    assert (decoded, tombstones) == (n_events, outcomes["tombstone"])
    assert dead == len(rejected) + len(others)
    lost = len(cdc) - int(decoded) - int(tombstones) - len(rejected)
    assert lost == 0

    # Every request gets exactly one reply, keyed by its request_id (or its own key when it has none).
    def reply_keys(raws, tag):
        keys = Counter()
        for i, raw in enumerate(raws):
            rid = answer(raw, lambda _: None, lambda _: None)["request_id"]  # the id the worker can read
            keys[rid.encode() if rid else f"{run}-{tag}{i}".encode()] += 1
        return keys

    def all_replies(topic, want):
        reader = TopicReader(stack, topic)
        try:
            got = reader.read_until(lambda ms: len(ms) >= want, timeout=120)
            return got + reader.read_until(lambda _: False, timeout=5)
        finally:
            reader.close()

    score_replies = all_replies(settings.score_replies_topic, len(score_requests))
    recs_replies = all_replies(settings.recs_replies_topic, len(rec_requests))
    assert Counter(m.key() for m in score_replies) == reply_keys(score_requests, "q")
    assert Counter(m.key() for m in recs_replies) == reply_keys(rec_requests, "r")  # request_id read by the same rules
    for m in score_replies + recs_replies:
        reply = orjson.loads(m.value())
        assert reply["status"] == "ok" or (
            reply["status"] in {"not_found", "invalid_request", "model_unavailable"} and reply["error"]
        ), reply

    # The graph stage consumed everything (its offsets are committed only after Neo4j has the events).
    group = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": graph_group(settings)})
    try:
        parts = [TopicPartition(t, p) for t in topics for p in range(4)]
        ends = {(tp.topic, tp.partition): end_offset(group, tp.topic, tp.partition) for tp in parts}
        deadline = time.monotonic() + 120
        while True:
            committed = {(tp.topic, tp.partition): max(tp.offset, 0) for tp in group.committed(parts, timeout=10)}
            if all(committed[k] >= v for k, v in ends.items()) or time.monotonic() > deadline:
                break
            time.sleep(1)
    finally:
        group.close()
    behind = {k: v - committed[k] for k, v in ends.items() if committed[k] < v}
    assert behind == {}

    # NUL bytes and injection text arrived in Neo4j verbatim.
    got = read_back(secured_neo4j, injected["ids"])
    strings = injected["strings"]
    assert got == {
        "full_name": strings["full_name"],
        "email": strings["email"],
        "merchant": strings["merchant"],
        "device": strings["device"],
        "user_agent": strings["user_agent"],
        "ip": strings["ip"],
    }

    rss_after, peak = rss_mib(worker["proc"].pid)
    assert worker["proc"].poll() is None, "the worker must still be running"
    print(
        f"\nhostile input: {len(cdc)} CDC messages ({dict(outcomes)}), {len(others)} processing errors, "
        f"lost {lost}; {len(score_requests)} score + {len(rec_requests)} recommendation requests, "
        f"{len(score_replies)} + {len(recs_replies)} replies; worker RSS {rss_before:.0f} -> {rss_after:.0f} MiB "
        f"(peak {peak:.0f} MiB)"
    )
    assert rss_after - rss_before < RSS_GROWTH_LIMIT_MIB


# ---------------------------------------------------------------------------------------------
# 2. Injection-looking strings through PostgreSQL, Debezium, Kafka, the worker and Neo4j
# ---------------------------------------------------------------------------------------------


def test_injection_strings_round_trip_verbatim_through_the_real_pipeline(stack, worker_process, secured_neo4j):
    run = uuid.uuid4().hex[:8]
    env = {**own_topics(run), **neo4j_env(secured_neo4j)}
    out = stack.replace(
        scores_topic=env["FRAUDGRAPH_SCORES_TOPIC"],
        score_requests_topic=env["FRAUDGRAPH_SCORE_REQUESTS_TOPIC"],
        score_replies_topic=env["FRAUDGRAPH_SCORE_REPLIES_TOPIC"],
    )
    ensure_topics(out, {t: 4 for t in (out.scores_topic, out.score_requests_topic, out.score_replies_topic)})
    scores = TopicReader(stack, out.scores_topic)
    # A node that must survive: were any string executed as Cypher, "DETACH DELETE n" would take it.
    with neo4j.GraphDatabase.driver(secured_neo4j.neo4j_uri, auth=secured_neo4j.neo4j_auth) as driver:
        sentinel = f"sentinel-{run}"
        driver.execute_query("CREATE (:Sentinel {name: $name})", name=sentinel)
    worker = worker_process(from_now=True, **env)

    base = random.randrange(10**12, 9 * 10**12, 10**8)
    cid, aid, mid, tid, lid = base + 1, base + 2, base + 3, base + 4, base + 5
    device = f"{HOSTILE['device']}-{run}"  # a primary key: unique per run
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with psycopg.connect(stack.pg_dsn()) as conn:
        conn.execute(
            "INSERT INTO customers (id, full_name, email, phone, country, kyc_level, created_at) "
            "VALUES (%s, %s, %s, %s, 'GB', 1, %s)",
            [cid, HOSTILE["full_name"], HOSTILE["email"], "$phone'})//", now],
        )
        conn.execute(
            "INSERT INTO accounts (id, customer_id, kind, currency, status, opened_at) "
            "VALUES (%s, %s, 'checking', 'GBP', 'active', %s)",
            [aid, cid, now],
        )
        conn.execute(
            "INSERT INTO merchants (id, name, mcc, country, created_at) VALUES (%s, %s, '5411', 'GB', %s)",
            [mid, HOSTILE["merchant"], now],
        )
        conn.execute(
            "INSERT INTO devices (id, os, user_agent, first_seen) VALUES (%s, %s, %s, %s)",
            [device, "`os`", HOSTILE["user_agent"], now],
        )
        conn.execute(
            "INSERT INTO logins (id, customer_id, device_id, ip, success, at) VALUES (%s, %s, %s, %s, true, %s)",
            [lid, cid, device, HOSTILE["ip"], now],
        )
        conn.execute(
            "INSERT INTO transactions (id, account_id, kind, amount, currency, merchant_id, device_id, ip, status, "
            "created_at, updated_at) VALUES (%s, %s, 'card_payment', 12.34, 'GBP', %s, %s, %s, 'pending', %s, %s)",
            [tid, aid, mid, device, HOSTILE["ip"], now, now],
        )
    try:
        messages = scores.read_until(lambda ms: any(m.key() == str(tid).encode() for m in ms), timeout=180)
    finally:
        scores.close()
    score = next(json.loads(m.value()) for m in messages if m.key() == str(tid).encode())
    # Where they appear in the score: the states it was decided with are named by device id and IP.
    assert f"Device:{device}" in score["state_versions"] and f"IP:{HOSTILE['ip']}" in score["state_versions"]

    # A score reply: the hostile request_id comes back verbatim, as the reply's key and in its body.
    request_id = f"{HOSTILE['full_name']}-{run}"
    replies = TopicReader(stack, out.score_replies_topic)
    try:
        producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
        producer.produce(
            out.score_requests_topic,
            key=b"k",
            value=json.dumps({"request_id": request_id, "transaction_id": tid}).encode(),
        )
        assert producer.flush(30) == 0
        got = replies.read_until(lambda ms: any(m.key() == request_id.encode() for m in ms), timeout=60)
    finally:
        replies.close()
    reply = next(json.loads(m.value()) for m in got if m.key() == request_id.encode())
    assert reply["request_id"] == request_id and reply["status"] == "ok" and reply["scores"] == [score]

    # Neo4j: every string verbatim, the graph intact.
    deadline = time.monotonic() + 120
    expected = {
        "full_name": HOSTILE["full_name"],
        "email": HOSTILE["email"],
        "merchant": HOSTILE["merchant"],
        "device": device,
        "user_agent": HOSTILE["user_agent"],
        "ip": HOSTILE["ip"],
    }
    while (got := read_back(secured_neo4j, {"transaction": tid})) != expected and time.monotonic() < deadline:
        time.sleep(1)
    assert got == expected
    with neo4j.GraphDatabase.driver(secured_neo4j.neo4j_uri, auth=secured_neo4j.neo4j_auth) as driver:
        login = driver.execute_query(
            "MATCH (c:Customer {id: $cid})-[l:LOGGED_IN]->(d:Device {id: $device}) "
            "MATCH (c)-[:LOGIN_FROM]->(ip:IP {address: $ip}) RETURN count(*) AS n",
            cid=cid,
            device=device,
            ip=HOSTILE["ip"],
        ).records[0]["n"]
        intact = driver.execute_query("MATCH (s:Sentinel {name: $name}) RETURN count(s) AS n", name=sentinel).records[
            0
        ]["n"]
        pwned = driver.execute_query("MATCH (n) WHERE n.pwned IS NOT NULL RETURN count(n) AS n").records[0]["n"]
    assert (login, intact, pwned) == (1, 1, 0)
    assert worker["proc"].poll() is None
