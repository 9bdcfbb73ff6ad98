"""The worker on the real broker: garbage goes to the dead-letter topic with a reason and its
original bytes, every good change event is decoded, and the worker keeps running."""

import json
import os
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from fraudgraph.connectors.dead_letter import DeadLetter
from fraudgraph.connectors.mapping import load_mapping

from support.stack import scrape

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "debezium" / "precise-schema"


@pytest.fixture
def worker(stack, worker_process):
    run = uuid.uuid4().hex[:8]
    prefix, dlq = f"garbage{run}", f"test.dead-letters.{run}"
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    topics = [NewTopic(f"{prefix}.public.{t}", 4, 1) for t in load_mapping().tables] + [NewTopic(dlq, 1, 1)]
    for future in admin.create_topics(topics).values():
        future.result(timeout=30)
    started = worker_process(FRAUDGRAPH_TOPIC_PREFIX=prefix, FRAUDGRAPH_DEAD_LETTER_TOPIC=dlq)
    return started | {"prefix": prefix, "dlq": dlq}


def test_garbage_is_dead_lettered_and_good_events_are_decoded(stack, worker, topic_reader):
    prefix = worker["prefix"]
    good = []
    for path in sorted(FIXTURES.glob("*.json")):
        fx = json.loads(path.read_text())
        topic = fx["topic"].replace("bank.", f"{prefix}.", 1)
        good.append((topic, fx["key"].encode() if fx["key"] else None, fx["value"].encode() if fx["value"] else None))
    tx_topic = f"{prefix}.public.transactions"
    valid = json.loads((FIXTURES / "transactions.c.json").read_text())["value"]
    envelope = json.loads(valid)

    def mutated(**after):
        doc = json.loads(valid)
        doc["payload"]["after"].update(after)
        return json.dumps(doc).encode()

    garbage = [
        (os.urandom(64), "not_json"),
        (valid[: len(valid) // 2].encode(), "not_json"),
        (b"\xff\xfe\x00not utf8", "not_json"),
        (b'"just a string"', "not_an_envelope"),
        (json.dumps({"payload": {"op": "c"}, "schema": {}}).encode(), "not_an_envelope"),
        (mutated(amount=12), "bad_value"),  # a number where the schema says base64 decimal bytes
        (mutated(account_id="1; DROP TABLE accounts"), "bad_value"),
        (mutated(ip="A" * 500_000), "bad_value"),
        (mutated(account_id=None), "missing_field"),
        (mutated(amount="/////w=="), "absurd_value"),  # -1 as two's complement: a negative amount
        (json.dumps(envelope | {"payload": envelope["payload"] | {"op": "z"}}).encode(), "unsupported_op"),
        (
            json.dumps(
                envelope
                | {"payload": envelope["payload"] | {"source": envelope["payload"]["source"] | {"table": "payroll"}}}
            ).encode(),
            "unknown_table",
        ),
    ]
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap, "message.max.bytes": 2_000_000})
    sent_garbage = []
    for i, (value, reason) in enumerate(garbage):
        key = f"garbage-{i}".encode()
        producer.produce(tx_topic, key=key, value=value)
        sent_garbage.append((key, value, reason))
    for topic, key, value in good:
        producer.produce(topic, key=key, value=value)
    assert producer.flush(30) == 0

    reader = topic_reader(worker["dlq"])
    got = reader.read_until(lambda ms: len(ms) >= len(garbage), timeout=90)
    letters = {m.key(): DeadLetter.from_headers(m.key(), m.value(), m.headers()) for m in got}
    assert len(got) == len(garbage)
    for key, value, reason in sent_garbage:
        letter = letters[key]
        assert letter.value == value  # original bytes, untouched
        assert letter.reason == reason, (reason, letter.detail)
        assert letter.topic == tx_topic and letter.offset >= 0 and letter.detail

    good_events = sum(1 for _, _, v in good if v is not None)
    tombstones = sum(1 for _, _, v in good if v is None)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = scrape(worker["port"])
        decoded = sum(v for k, v in m.items() if k.startswith("fraudgraph_events_decoded_total"))
        if decoded >= good_events:
            break
        time.sleep(0.5)
    assert decoded == good_events
    assert sum(v for k, v in m.items() if k.startswith("fraudgraph_tombstones_total")) == tombstones
    assert sum(v for k, v in m.items() if k.startswith("fraudgraph_dead_letters_total")) == len(garbage)
    assert worker["proc"].poll() is None, "the worker must still be running"
