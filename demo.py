"""``fraudgraph demo``: bring the stack up and follow one payment through the change stream.

It inserts a customer, an account and a transaction into the bank's PostgreSQL, settles the
transaction, and prints the Debezium change events that arrive on Kafka for it: the path every
later stage (decoder, worker, graph, model) consumes.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import datetime, timezone

import psycopg
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from fraudgraph.kafka_config import confluent_config
from fraudgraph.settings import Settings
from fraudgraph.stack import local


def _next_id(conn, table: str) -> int:
    from psycopg import sql

    return conn.execute(sql.SQL("SELECT coalesce(max(id), 0) + 1 FROM {}").format(sql.Identifier(table))).fetchone()[0]


def assign_at_end(consumer: Consumer, topic: str) -> None:
    """Position ``consumer`` after everything already in ``topic``: ids get reused after deletes,
    so only changes appended from now on belong to this run.

    A topic that does not exist yet is an error: assigning its (no) partitions would read nothing,
    silently, even once the topic is created."""
    meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise LookupError(f"topic {topic!r} does not exist yet: create it before positioning at its end")
    consumer.assign([TopicPartition(topic, p, _end_offset(consumer, topic, p)) for p in meta.partitions])


def _end_offset(consumer: Consumer, topic: str, partition: int, wait_s: float = 15.0) -> int:
    """The partition's end; a topic created a moment ago has no leader yet (``NOT_LEADER_FOR_PARTITION``
    or ``LEADER_NOT_AVAILABLE`` for a few hundred ms), which is waited out, not an error."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
        except KafkaException as err:
            retriable = err.args[0].code() in (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE)
            if not retriable or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def run_demo(settings: Settings, timeout: float = 60.0) -> int:
    local.up(settings)
    topic = settings.cdc_topic("transactions")
    consumer = Consumer(confluent_config(settings, **{
        "group.id": f"fraudgraph-demo-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
    }))
    assign_at_end(consumer, topic)
    now = datetime.now(timezone.utc)
    with psycopg.connect(settings.pg_dsn()) as conn:
        customer, account, tx = (_next_id(conn, t) for t in ("customers", "accounts", "transactions"))
        conn.execute(
            "INSERT INTO customers (id, full_name, email, phone, country, kyc_level, created_at) VALUES (%s,%s,%s,%s,%s,%s,%s)",
            [customer, "Demo Customer", f"demo{customer}@example.com", None, "GB", 2, now],
        )
        conn.execute(
            "INSERT INTO accounts (id, customer_id, kind, currency, status, opened_at) VALUES (%s,%s,%s,%s,%s,%s)",
            [account, customer, "checking", "GBP", "active", now],
        )
        conn.execute(
            "INSERT INTO transactions (id, account_id, kind, amount, currency, status, created_at, updated_at)"
            " VALUES (%s,%s,'transfer',42.50,'GBP','pending',%s,%s)",
            [tx, account, now, now],
        )
        conn.commit()
        conn.execute("UPDATE transactions SET status = 'settled', updated_at = now() WHERE id = %s", [tx])
        conn.commit()
    print(f"\nwrote customer {customer}, account {account}, transaction {tx} (created, then settled) into PostgreSQL")

    seen: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while len(seen) < 2 and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error() or msg.value() is None:
                continue
            payload = json.loads(msg.value()).get("payload", {})
            row = payload.get("after") or payload.get("before") or {}
            if row.get("id") != tx:
                continue
            before = (payload.get("before") or {}).get("status")
            after = (payload.get("after") or {}).get("status")
            seen.append(payload["op"])
            print(f"  {topic} [partition {msg.partition()} offset {msg.offset()}] op={payload['op']} "
                  f"status {before} -> {after}  lsn={payload['source'].get('lsn')} txId={payload['source'].get('txId')}")
    finally:
        consumer.close()
    if seen != ["c", "u"]:
        print(f"expected change events c, u for transaction {tx}; saw {seen}")
        return 1
    print("\nthe change travelled PostgreSQL -> Debezium (pgoutput) -> Kafka; `fraudgraph stack down` stops the stack")
    return 0
