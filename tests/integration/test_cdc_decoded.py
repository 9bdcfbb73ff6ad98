"""Simulated payments written into the real PostgreSQL arrive through Debezium and Kafka, every
one decoded, each transaction's changes in order, and the count matches exactly."""

import psycopg

from fraudgraph.connectors.decoder import Tombstone, decode
from fraudgraph.connectors.events import TransactionCreated, TransactionUpdated
from fraudgraph.connectors.mapping import load_mapping
from fraudgraph.stack.simulator import simulate

from support.stack import cdc_topic


def test_every_simulated_transaction_arrives_decoded_in_per_key_order(stack, topic_reader):
    mapping = load_mapping()
    reader = topic_reader(cdc_topic(stack, "transactions"), from_now=True)
    with psycopg.connect(stack.pg_dsn()) as conn:
        before_max = conn.execute("SELECT coalesce(max(id), 0) FROM transactions").fetchone()[0]
    report = simulate(stack, mode="postgres", customers=100, duration_s=3 * 3600, fraud_rate=0.05, seed=11)
    with psycopg.connect(stack.pg_dsn()) as conn:
        written = dict(conn.execute("SELECT id, status FROM transactions WHERE id > %s", [before_max]).fetchall())
    assert len(written) == report.rows["transactions"]["insert"] > 50

    events: list = []  # (partition, event) of this run's transactions, decoded once each
    seen = 0

    def complete(messages):
        nonlocal seen
        for m in messages[seen:]:
            event = decode(m.topic(), m.value(), mapping, key=m.key())
            if not isinstance(event, Tombstone) and event.transaction_id in written:
                events.append((m.partition(), event))
        seen = len(messages)
        created = {e.transaction_id for _, e in events if isinstance(e, TransactionCreated)}
        finals = {e.transaction_id: e.status for _, e in events}
        return created == set(written) and finals == written

    reader.read_until(complete, timeout=180)
    created = [e for _, e in events if isinstance(e, TransactionCreated)]
    assert sorted(e.transaction_id for e in created) == sorted(written)  # exactly once each
    by_key: dict[int, list] = {}
    for partition, event in events:
        by_key.setdefault(event.transaction_id, []).append((partition, event))
    for tx_id, changes in by_key.items():
        assert len({p for p, _ in changes}) == 1, "a row's changes share one partition"
        versions = [e.position.version for _, e in changes]
        assert versions == sorted(versions) and len(set(versions)) == len(versions)
        assert isinstance(changes[0][1], TransactionCreated)
        assert all(isinstance(e, TransactionUpdated) for _, e in changes[1:])
        assert changes[-1][1].status == written[tx_id]
