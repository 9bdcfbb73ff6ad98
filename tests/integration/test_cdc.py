"""Debezium captures INSERT, UPDATE and DELETE on the bank's PostgreSQL into Kafka."""

import json
from datetime import UTC, datetime

import psycopg

from support.stack import cdc_topic, debezium_payload


def test_insert_update_delete_arrive_as_change_events(stack, topic_reader):
    reader = topic_reader(cdc_topic(stack, "transactions"), from_now=True)
    now = datetime.now(UTC)
    with psycopg.connect(stack.pg_dsn()) as conn:
        base = conn.execute("SELECT coalesce(max(id), 0) + 1000 FROM transactions").fetchone()[0]
        cust, acct, tx = base, base, base
        conn.execute(
            "INSERT INTO customers VALUES (%s,'CDC Test','cdc@example.com',NULL,'GB',1,%s) ON CONFLICT DO NOTHING",
            [cust, now],
        )
        conn.execute(
            "INSERT INTO accounts VALUES (%s,%s,'checking','GBP','active',%s) ON CONFLICT DO NOTHING", [acct, cust, now]
        )
        conn.execute(
            "INSERT INTO transactions (id, account_id, kind, amount, currency, status, created_at, updated_at)"
            " VALUES (%s,%s,'transfer',123.45,'GBP','pending',%s,%s)",
            [tx, acct, now, now],
        )
        conn.commit()
        conn.execute("UPDATE transactions SET status='settled' WHERE id=%s", [tx])
        conn.commit()
        conn.execute("DELETE FROM transactions WHERE id=%s", [tx])
        conn.commit()

    def mine(msgs):
        out = []
        for m in msgs:
            if json.loads(m.key())["payload"]["id"] == tx:
                out.append((m, debezium_payload(m)))
        return out

    got = mine(reader.read_until(lambda ms: len(mine(ms)) >= 4, timeout=90))
    ops = [p["op"] if p else "tombstone" for _, p in got]
    assert ops == ["c", "u", "d", "tombstone"]
    create, update, delete = (p for _, p in got[:3])
    assert create["before"] is None and create["after"]["status"] == "pending"
    assert update["before"]["status"] == "pending" and update["after"]["status"] == "settled"  # REPLICA IDENTITY FULL
    assert delete["before"]["status"] == "settled" and delete["after"] is None
    # Source positions grow: the engine uses them as versions.
    lsns = [p["source"]["lsn"] for _, p in got[:3]]
    assert lsns == sorted(lsns) and len(set(lsns)) == 3
    assert all(m.partition() == got[0][0].partition() for m, _ in got)
