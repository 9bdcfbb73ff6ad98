"""Outages of the services around the worker, during load, on the real stack: the Kafka broker
restarts; Neo4j is away for 30 s. The worker recovers by itself; nothing is lost or duplicated.

These stop shared services: they wait until each is ready again, so later tests find the stack up.
"""

import time
import urllib.request
from collections import Counter
from datetime import datetime, timezone

import psycopg

import pytest
from neo4j import GraphDatabase

from fraudgraph.stack import debezium, local

from conftest import TopicReader, paced_load, scrape
from test_worker import ID_SPAN, _isolated_run, scored_ids

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def release_replication_slot(stack, older_than: datetime) -> int:
    """Seen after a broker outage: Connect restarts the Debezium task, but the old task's replication
    connection stays open and keeps the slot, so every retry fails with 'replication slot
    "fraudgraph" is active for PID ...' and CDC stops for good (issue 10, open). Until that is fixed
    in the stack, release it here, so the tests after this one find CDC flowing."""
    with psycopg.connect(stack.pg_dsn(), autocommit=True) as conn:
        stale = conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE backend_start < %s",
                             [older_than]).fetchall()
    if not stale:
        return 0
    released = datetime.now(timezone.utc)
    status = debezium.connector_status(stack) or {}
    for task in status.get("tasks", []):
        urllib.request.urlopen(urllib.request.Request(
            f"{stack.connect_url}/connectors/{stack.connector_name}/tasks/{task['id']}/restart", method="POST"), timeout=30)
    # Until the restarted task streams again: the slot is held by a connection opened after the release.
    deadline = time.monotonic() + 180
    with psycopg.connect(stack.pg_dsn(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT r.backend_start FROM pg_replication_slots s JOIN pg_stat_replication r "
                               "ON r.pid = s.active_pid WHERE s.slot_name = %s", ["fraudgraph"]).fetchone()
            if row and row[0] > released:
                break
            time.sleep(1)
    time.sleep(5)  # its first keepalive round trip
    return len(stale)


def rss_mib(pid: int) -> float:
    return next(int(l.split()[1]) / 1024 for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:"))


def records(messages: list) -> list:
    """Each score record once: the test's own reader commits nothing, so a broker restart makes it
    read the topic again from the start. A duplicate *score* is a second record, at another offset."""
    return list({(m.partition(), m.offset()): m for m in messages}.values())


def all_scored_once(scores: TopicReader, seen: list, report) -> Counter:
    base, n = report.config.id_base, report.rows["transactions"]["insert"]
    seen += scores.read_until(lambda ms: len(scored_ids(seen + ms, base)) >= n, timeout=300)
    seen += scores.read_until(lambda _: False, timeout=5)  # anything more would be a duplicate
    return scored_ids(records(seen), base)


def test_broker_restart_during_load_worker_reconnects_nothing_lost_or_duplicated(stack, worker_process):
    env, settings = _isolated_run(stack, "broker")
    kafka = local.services(stack)["kafka"]
    scores = TopicReader(stack, settings.scores_topic)
    stopped_at = datetime.now(timezone.utc)
    try:
        worker = worker_process(**env)
        load, out = paced_load(settings, seed=31)
        seen = scores.read_until(lambda ms: len(ms) >= 100, timeout=120)
        stopped_at, stopped = datetime.now(timezone.utc), time.monotonic()
        kafka.stop()
        time.sleep(5)
        kafka.start()
        kafka.wait_ready()
        down_s = time.monotonic() - stopped
        load.join(300)
        counts = all_scored_once(scores, seen, out["report"])
        n = out["report"].rows["transactions"]["insert"]
        print(f"\nbroker down {down_s:.1f}s under 40 tx/s: {n} transactions, {len(counts)} scored, "
              f"{sum(c > 1 for c in counts.values())} twice")
        assert worker["proc"].poll() is None  # it reconnected by itself
        assert len(counts) == n  # none lost
        assert set(counts.values()) == {1}  # none twice
    finally:
        kafka.start()
        kafka.wait_ready()
        release_replication_slot(stack, stopped_at)
        scores.close()


def test_neo4j_away_30s_scoring_goes_on_graph_catches_up_memory_bounded(stack, worker_process):
    env, settings = _isolated_run(stack, "neo4jdown")
    neo4j = local.services(stack)["neo4j"]
    scores = TopicReader(stack, settings.scores_topic)
    try:
        worker = worker_process(**env)
        load, out = paced_load(settings, seed=37)
        seen = scores.read_until(lambda ms: len(ms) >= 100, timeout=120)
        rss_before = rss_mib(worker["proc"].pid)
        neo4j.stop()
        during = scores.read_until(lambda _: False, timeout=30)  # Neo4j away: scores must keep coming
        queued = scrape(worker["port"]).get("fraudgraph_graph_queue_depth", 0)
        rss_peak = rss_mib(worker["proc"].pid)
        neo4j.start()
        neo4j.wait_ready()
        seen += during
        load.join(300)
        report = out["report"]
        base, n = report.config.id_base, report.rows["transactions"]["insert"]
        counts = all_scored_once(scores, seen, report)
        # The graph ends complete: every transaction of the run is a node, with its account.
        auth = (settings.neo4j_user, settings.neo4j_password) if settings.neo4j_password else None
        deadline, in_graph = time.monotonic() + 180, 0
        with GraphDatabase.driver(settings.neo4j_uri, auth=auth) as driver:
            while in_graph < n and time.monotonic() < deadline:
                in_graph = driver.execute_query(
                    "MATCH (a:Account)-[:INITIATED]->(t:Transaction) WHERE t.id >= $lo AND t.id < $hi RETURN count(t) AS n",
                    lo=base, hi=base + ID_SPAN).records[0]["n"]
                time.sleep(2)
        print(f"\nNeo4j away 30s under 40 tx/s: {len(scored_ids(during, base))} scored while it was away, "
              f"graph queue {queued:.0f}, RSS {rss_before:.0f} -> {rss_peak:.0f} MiB; graph {in_graph}/{n} after")
        assert len(scored_ids(during, base)) > 100  # scoring did not wait for the graph
        assert worker["proc"].poll() is None
        assert len(counts) == n and set(counts.values()) == {1}
        assert in_graph == n
        assert rss_peak - rss_before < 256  # the backlog waits in Kafka, not in memory
    finally:
        neo4j.start()
        neo4j.wait_ready()
        scores.close()
