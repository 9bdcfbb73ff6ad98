"""Outages of the services around the worker, during load, on the real stack: the Kafka broker
restarts; Neo4j is away for 30 s; PostgreSQL and Kafka Connect restart under a stream of changes.
The worker and Debezium recover by themselves (Debezium with the stack's CDC watchdog); nothing
is lost or duplicated.

These stop shared services: they wait until each is ready again, so later tests find the stack up.
"""

import json
import threading
import time
import uuid
from collections import Counter

import psycopg
import pytest
from neo4j import GraphDatabase

from fraudgraph.stack import local

from support.stack import ID_SPAN, TopicReader, cdc_topic, isolated_run, paced_load, scored_ids, scrape

pytestmark = [pytest.mark.integration, pytest.mark.slow]


MERCHANT = "INSERT INTO merchants (id, name, mcc, country, created_at) VALUES (%s, %s, '5411', 'DE', now()) ON CONFLICT DO NOTHING"


def merchant_ids(messages: list) -> Counter:
    """Change events per merchant id (a tombstone has no value; none are expected here)."""
    return Counter(json.loads(m.key())["payload"]["id"] for m in messages if m.value() is not None)


def change_reaches_kafka(stack, timeout: float) -> float:
    """Seconds until a row inserted now shows up as a change event on its CDC topic."""
    reader = TopicReader(stack, cdc_topic(stack, "merchants"), from_now=True)
    try:
        marker, started = uuid.uuid4().int % 10**12 + 9 * 10**15, time.monotonic()
        with psycopg.connect(stack.pg_dsn(), autocommit=True) as conn:
            conn.execute(MERCHANT, [marker, "cdc-probe"])
        got = reader.read_until(lambda ms: marker in merchant_ids(ms), timeout=timeout)
        assert marker in merchant_ids(got), f"a change made after the outage never reached Kafka ({timeout:.0f}s)"
        return time.monotonic() - started
    finally:
        reader.close()


def watchdog_actions(stack) -> dict[str, float]:
    """The stack's CDC watchdog's actions so far, by kind (its /metrics)."""
    prefix = "fraudgraph_cdc_watchdog_actions_total"
    return {k[len(prefix) :]: v for k, v in scrape(stack.cdc_watchdog_port).items() if k.startswith(prefix)}


def actions_since(stack, before: dict[str, float]) -> str:
    taken = {k: v - before.get(k, 0) for k, v in watchdog_actions(stack).items() if v > before.get(k, 0)}
    return ", ".join(f"{k} x{n:.0f}" for k, n in taken.items()) or "no action needed"


class ChangeWriter(threading.Thread):
    """Inserts merchants one transaction each at ``rate``/s, as a bank application would: when the
    database goes away it reconnects and retries the same row (idempotent: ON CONFLICT DO NOTHING),
    so every id in ``written`` is committed exactly once."""

    def __init__(self, stack, base: int, n: int, rate: float):
        super().__init__(daemon=True)
        self.stack, self.base, self.n, self.rate = stack, base, n, rate
        self.written: list[int] = []
        self.reconnects = 0

    def run(self):
        conn, i, t0 = None, 0, time.monotonic()
        while i < self.n:
            try:
                conn = conn or psycopg.connect(self.stack.pg_dsn(), autocommit=True, connect_timeout=5)
                conn.execute(MERCHANT, [self.base + i, f"restart-{i}"])
                self.written.append(self.base + i)
                i += 1
                time.sleep(max(0.0, t0 + i / self.rate - time.monotonic()))
            except psycopg.OperationalError:
                self.reconnects += 1
                conn = None
                time.sleep(0.5)
        if conn is not None:
            conn.close()


def rss_mib(pid: int) -> float:
    return next(int(line.split()[1]) / 1024 for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS:"))


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
    env, settings = isolated_run(stack, "broker")
    kafka = local.services(stack)["kafka"]
    scores = TopicReader(stack, settings.scores_topic)
    try:
        worker = worker_process(**env)
        load, out = paced_load(settings, seed=31)
        seen = scores.read_until(lambda ms: len(ms) >= 100, timeout=120)
        acted, stopped = watchdog_actions(stack), time.monotonic()
        kafka.stop()
        time.sleep(5)
        kafka.start()
        kafka.wait_ready()
        down_s = time.monotonic() - stopped
        load.join(300)
        counts = all_scored_once(scores, seen, out["report"])
        n = out["report"].rows["transactions"]["insert"]
        print(
            f"\nbroker down {down_s:.1f}s under 40 tx/s: {n} transactions, {len(counts)} scored, "
            f"{sum(c > 1 for c in counts.values())} twice"
        )
        assert worker["proc"].poll() is None  # it reconnected by itself
        assert len(counts) == n  # none lost
        assert set(counts.values()) == {1}  # none twice
        # Debezium too: a change made now reaches Kafka without help from the test (after a broker
        # outage the old task can keep the replication slot; the stack's CDC watchdog frees it).
        healed_s = change_reaches_kafka(stack, timeout=240)
        print(
            f"CDC resumed: a new change reached Kafka {healed_s:.0f}s after the broker was back; "
            f"watchdog: {actions_since(stack, acted)}"
        )
    finally:
        kafka.start()
        kafka.wait_ready()
        scores.close()


def test_neo4j_away_30s_scoring_goes_on_graph_catches_up_memory_bounded(stack, worker_process):
    env, settings = isolated_run(stack, "neo4jdown")
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
                    lo=base,
                    hi=base + ID_SPAN,
                ).records[0]["n"]
                time.sleep(2)
        print(
            f"\nNeo4j away 30s under 40 tx/s: {len(scored_ids(during, base))} scored while it was away, "
            f"graph queue {queued:.0f}, RSS {rss_before:.0f} -> {rss_peak:.0f} MiB; graph {in_graph}/{n} after"
        )
        assert len(scored_ids(during, base)) > 100  # scoring did not wait for the graph
        assert worker["proc"].poll() is None
        assert len(counts) == n and set(counts.values()) == {1}
        assert in_graph == n
        assert rss_peak - rss_before < 256  # the backlog waits in Kafka, not in memory
    finally:
        neo4j.start()
        neo4j.wait_ready()
        scores.close()


def test_postgres_and_connect_restarts_debezium_resumes_from_its_offsets_no_change_lost(stack):
    services = local.services(stack)
    postgres, connect = services["postgres"], services["connect"]
    reader = TopicReader(stack, cdc_topic(stack, "merchants"), from_now=True)
    base = uuid.uuid4().int % 10**12 + 8 * 10**15
    writer = ChangeWriter(stack, base, n=2400, rate=40)  # about 60 s of changes
    acted = watchdog_actions(stack)
    try:
        writer.start()
        time.sleep(10)
        postgres.stop()  # fast shutdown: the replication connection and the writer's are cut
        time.sleep(3)
        postgres.start()
        postgres.wait_ready()
        time.sleep(10)
        connect.stop()  # Debezium stops mid-stream; its last flushed offset is where it resumes
        time.sleep(3)
        connect.start()
        connect.wait_ready()  # re-registers the connector (idempotent) and waits for its task
        writer.join(300)
        assert not writer.is_alive()
        written = set(writer.written)
        seen = merchant_ids(reader.read_until(lambda ms: written <= set(merchant_ids(ms)), timeout=300))
        lost = written - set(seen)
        twice = sum(seen[i] > 1 for i in written)
        print(
            f"\nPostgreSQL and Connect restarted under {len(written)} changes at 40/s "
            f"(writer reconnected {writer.reconnects}x): {len(written) - len(lost)} captured, {len(lost)} lost, "
            f"{twice} delivered twice (at-least-once: replayed since the last offset flush); "
            f"watchdog: {actions_since(stack, acted)}"
        )
        assert writer.reconnects > 0  # the database really went away under the writer
        assert not lost, f"{len(lost)} committed changes never reached Kafka, e.g. {sorted(lost)[:5]}"
    finally:
        reader.close()
        postgres.start()
        postgres.wait_ready()
        connect.start()
        connect.wait_ready()
