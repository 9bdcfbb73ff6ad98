"""PostgreSQL -> Debezium -> Kafka -> worker -> Neo4j: the worker's graph stage builds the
expected nodes and relationships for simulated payments, and commits offsets only behind Neo4j."""

import time

import psycopg
from neo4j import GraphDatabase

from fraudgraph.stack.simulator import simulate


def test_simulated_payments_appear_in_the_graph(stack, worker_process):
    report = simulate(stack, mode="postgres", customers=80, duration_s=2 * 3600, fraud_rate=0.05, seed=5)
    base = report.config.id_base
    with psycopg.connect(stack.pg_dsn()) as conn:
        txs = conn.execute(
            "SELECT id, status, merchant_id, counterparty_account_id, device_id, ip FROM transactions"
            " WHERE id >= %s AND id < %s", [base, base + 10**9]).fetchall()
        accounts = [r[0] for r in conn.execute(
            "SELECT id FROM accounts WHERE id >= %s AND id < %s", [base, base + 10**9]).fetchall()]
    assert len(txs) == report.rows["transactions"]["insert"] > 30
    expected = {
        "transactions": len(txs),
        "initiated": len(txs),
        "pays": sum(1 for t in txs if t[2] is not None),
        "transfers": sum(1 for t in txs if t[3] is not None),
        "devices": sum(1 for t in txs if t[4] is not None),
        "ips": sum(1 for t in txs if t[5] is not None),
        "owns": len(accounts),
        "settled_like": {t[0]: t[1] for t in txs},
    }

    worker_process()
    auth = (stack.neo4j_user, stack.neo4j_password) if stack.neo4j_password else None
    query = """
    MATCH (t:Transaction) WHERE t.id IN $ids AND coalesce(t.deleted, false) = false
    OPTIONAL MATCH (a:Account)-[:INITIATED]->(t)
    OPTIONAL MATCH (t)-[:PAYS]->(m:Merchant)
    OPTIONAL MATCH (t)-[:TRANSFER_TO]->(c:Account)
    OPTIONAL MATCH (t)-[:USING_DEVICE]->(d:Device)
    OPTIONAL MATCH (t)-[:FROM_IP]->(ip:IP)
    RETURN count(t) AS transactions, count(a) AS initiated, count(m) AS pays, count(c) AS transfers,
           count(d) AS devices, count(ip) AS ips, collect([t.id, t.status]) AS statuses
    """
    with GraphDatabase.driver(stack.neo4j_uri, auth=auth) as driver:
        deadline = time.monotonic() + 120
        while True:
            row = driver.execute_query(query, ids=[t[0] for t in txs]).records[0]
            got = {k: row[k] for k in ("transactions", "initiated", "pays", "transfers", "devices", "ips")}
            statuses = {tx: status for tx, status in row["statuses"]}
            if (got["transactions"] == expected["transactions"] and statuses == expected["settled_like"]) or time.monotonic() > deadline:
                break
            time.sleep(1)
        owns = driver.execute_query(
            "MATCH (:Customer)-[:OWNS]->(a:Account) WHERE a.id IN $ids RETURN count(a) AS n", ids=accounts).records[0]["n"]
    assert got == {k: expected[k] for k in got}
    assert statuses == expected["settled_like"]  # the newest version of every row won
    assert owns == expected["owns"]
