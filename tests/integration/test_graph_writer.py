"""GraphWriter against the real Neo4j: exact graph shape, idempotent replays, version guard, tombstones,
parameters stored verbatim, retries without loss, backpressure, flush.

Each test writes ids in a random range of its own (``EventFactory(base)``) and removes them after.
"""

from __future__ import annotations

import asyncio
import random

import pytest
from neo4j import GraphDatabase
from neo4j.exceptions import ServiceUnavailable

from fraudgraph.graph import metrics
from fraudgraph.graph.synthetic import T0, EventFactory, stream
from fraudgraph.graph.writer import GraphWriter

HOSTILE = "x'}) DETACH DELETE n //"
INT_LABELS = ("Customer", "Account", "Merchant", "Transaction")


def _auth(settings):
    return (settings.neo4j_user, settings.neo4j_password) if settings.neo4j_password else None


@pytest.fixture
def neo(stack):
    with GraphDatabase.driver(stack.neo4j_uri, auth=_auth(stack), notifications_min_severity="OFF") as driver:
        yield driver


@pytest.fixture
def factory(neo):
    base = random.randrange(10**12, 9 * 10**12, 10**8)
    yield EventFactory(base=base)
    _cleanup(neo, base)


def _scope(var: str) -> str:
    """Cypher predicate: the node belongs to this test's id range."""
    return (
        f"((({var}:Customer OR {var}:Account OR {var}:Merchant OR {var}:Transaction) "
        f"AND {var}.id >= $lo AND {var}.id < $hi) "
        f"OR ({var}:Device AND {var}.id STARTS WITH $dev) OR ({var}:IP AND {var}.address ENDS WITH $ip))"
    )


def _params(base: int) -> dict:
    return {"lo": base, "hi": base + 10**8, "dev": f"dev-{base}-", "ip": f"|{base}"}


def _cleanup(driver, base: int) -> None:
    driver.execute_query(f"MATCH (n) WHERE {_scope('n')} DETACH DELETE n", _params(base))


def _shape(driver, base: int) -> tuple[dict, dict]:
    nodes, _, _ = driver.execute_query(
        f"MATCH (n) WHERE {_scope('n')} RETURN labels(n)[0] AS label, count(*) AS n", _params(base)
    )
    rels, _, _ = driver.execute_query(
        f"MATCH (a)-[r]->(b) WHERE {_scope('a')} RETURN type(r) AS type, count(*) AS n", _params(base)
    )
    return {r["label"]: r["n"] for r in nodes}, {r["type"]: r["n"] for r in rels}


def _dump(driver, base: int) -> list:
    """Every node and relationship of the test with all its properties, canonically ordered."""
    nodes, _, _ = driver.execute_query(
        f"MATCH (n) WHERE {_scope('n')} RETURN labels(n) AS l, properties(n) AS p", _params(base)
    )
    rels, _, _ = driver.execute_query(
        f"MATCH (a)-[r]->(b) WHERE {_scope('a')} "
        "RETURN type(r) AS t, properties(a) AS a, properties(b) AS b, properties(r) AS p",
        _params(base),
    )
    out = [repr(sorted((r["l"], sorted(r["p"].items())) for r in nodes))]
    out += sorted(repr((r["t"], sorted(r["a"].items()), sorted(r["b"].items()), sorted(r["p"].items()))) for r in rels)
    return out


def _writer(settings, **kw) -> GraphWriter:
    return GraphWriter(settings.neo4j_uri, _auth(settings), **kw)


async def _write(settings, events, **kw) -> None:
    async with _writer(settings, **kw) as w:
        for e in events:
            await w.submit(e)
        await w.flush()


def _scenario(f: EventFactory) -> list:
    return [
        f.customer(1),
        f.customer(2),
        f.account(10, 1),
        f.account(11, 2),
        f.merchant(20),
        f.device(30),
        f.device(31),
        f.card_payment(40, 10, 20, device=30, ip=1),
        f.transfer(41, 10, 11, device=31, ip=2),
        f.login(50, 1, 30, 1),
        f.login(51, 2, None, 3),
        f.profile_change(60, 1, 31),
        f.profile_change(61, 2, None),
        f.fraud_report(70, 40),
        f.truncate("logins"),  # counted, never applied
    ]


EXPECTED_NODES = {"Customer": 2, "Account": 2, "Merchant": 1, "Device": 2, "IP": 3, "Transaction": 2}
EXPECTED_RELS = {
    "OWNS": 2,
    "INITIATED": 2,
    "PAYS": 1,
    "TRANSFER_TO": 1,
    "USING_DEVICE": 2,
    "FROM_IP": 2,
    "LOGGED_IN": 1,
    "LOGIN_FROM": 2,
    "CHANGED_PROFILE": 2,
}


def test_events_build_the_exact_graph_and_replays_change_nothing(stack, neo, factory):
    f = factory
    events = _scenario(f)
    written_before = metrics.EVENTS_WRITTEN._value.get()
    asyncio.run(_write(stack, events))
    assert _shape(neo, f.base) == (EXPECTED_NODES, EXPECTED_RELS)
    assert metrics.EVENTS_WRITTEN._value.get() - written_before == len(events)

    records, _, _ = neo.execute_query(
        "MATCH (a:Account {id: $a})-[:INITIATED]->(t:Transaction {id: $t})-[:PAYS]->(m:Merchant {id: $m}) "
        "MATCH (c:Customer)-[:OWNS]->(a) RETURN c.id AS c, t AS t",
        a=f.id(10),
        t=f.id(40),
        m=f.id(20),
    )
    [rec] = records
    tx = rec["t"]
    assert rec["c"] == f.id(1)
    assert tx["amount"] == 12.34 and tx["amount_text"] == "12.34" and tx["kind"] == "card_payment"
    assert tx["fraud_report_kind"] == "confirmed_fraud" and tx["fraud_report_id"] == f.id(70)
    assert isinstance(tx["version"], int) and tx["deleted"] is False
    assert tx["created_at"].to_native() == T0 and tx["reported_at"].to_native() == T0  # Neo4j DateTime
    records, _, _ = neo.execute_query(
        "MATCH (c:Customer {id: $c})-[r:CHANGED_PROFILE]->(c) RETURN r.change_id AS id", c=f.id(2)
    )
    assert [r["id"] for r in records] == [f.id(61)]  # no device: the edge points at the customer

    before = _dump(neo, f.base)
    asyncio.run(_write(stack, events))  # the same events again, one batch
    asyncio.run(_write(stack, events, batch_size=3))  # and again, in small batches
    assert _dump(neo, f.base) == before


def test_an_older_version_after_a_newer_one_is_ignored(stack, neo, factory):
    f = factory
    old_pos, new_pos = f.pos(), f.pos()
    moved = f.pos()
    asyncio.run(
        _write(
            stack,
            [
                f.customer(1, name="new", position=new_pos),
                f.card_payment(40, 10, 20, position=old_pos),
                f.card_payment(40, 10, 21, status="settled", position=moved, updated=True),  # merchant corrected
                f.login(50, 1, 30, 1, success=True, position=new_pos),
            ],
        )
    )
    before = _dump(neo, f.base)
    asyncio.run(_write(stack, [f.customer(1, name="old", position=old_pos)]))
    asyncio.run(_write(stack, [f.card_payment(40, 10, 20, position=old_pos)]))
    asyncio.run(_write(stack, [f.login(50, 1, 31, 2, success=False, position=old_pos)]))
    assert _dump(neo, f.base) == before
    records, _, _ = neo.execute_query(
        "MATCH (c:Customer {id: $c}) OPTIONAL MATCH (t:Transaction {id: $t})-[:PAYS]->(m) "
        "RETURN c.full_name AS name, collect(m.id) AS merchants, t.status AS status",
        c=f.id(1),
        t=f.id(40),
    )
    assert records[0]["name"] == "new" and records[0]["merchants"] == [f.id(21)] and records[0]["status"] == "settled"


def test_deletes_are_tombstones_an_older_upsert_cannot_resurrect(stack, neo, factory):
    f = factory
    v1 = f.pos()
    asyncio.run(
        _write(
            stack,
            [
                f.account(10, 1, position=v1),
                f.card_payment(40, 10, 20, position=v1),
                f.login(50, 1, 30, 1, position=v1),
                f.fraud_report(70, 40, position=v1),
            ],
        )
    )
    asyncio.run(
        _write(
            stack,
            [
                f.delete("account", 10),
                f.delete("login", 50),
                f.delete("fraud_report", 70),
                f.delete("device", f.device_id(99)),
            ],
        )
    )  # a delete for a device never seen
    # Late / replayed older upserts of every deleted row:
    asyncio.run(
        _write(
            stack,
            [
                f.account(10, 1, position=v1),
                f.login(50, 1, 30, 1, position=v1),
                f.fraud_report(70, 40, position=v1),
                f.device(99, position=v1),
            ],
        )
    )
    records, _, _ = neo.execute_query(
        "MATCH (a:Account {id: $a}) OPTIONAL MATCH (a)<-[o:OWNS]-() RETURN a, count(o) AS owners", a=f.id(10)
    )
    account = records[0]["a"]
    assert account["deleted"] is True and "status" not in account and records[0]["owners"] == 0
    records, _, _ = neo.execute_query("MATCH (d:Device {id: $d}) RETURN d", d=f.device_id(99))
    assert records[0]["d"]["deleted"] is True and "os" not in records[0]["d"]
    records, _, _ = neo.execute_query(
        "MATCH ()-[r:LOGGED_IN|LOGIN_FROM {login_id: $l}]->() RETURN collect(r.deleted) AS d, collect(r.at) AS at",
        l=f.id(50),
    )
    assert records[0]["d"] == [True, True] and records[0]["at"] == []
    records, _, _ = neo.execute_query("MATCH (t:Transaction {id: $t}) RETURN t", t=f.id(40))
    tx = records[0]["t"]
    assert tx["fraud_report_deleted"] is True and "fraud_report_kind" not in tx
    assert tx["deleted"] is False  # the transaction itself is untouched by its report's delete
    # A re-insert at the source (newer LSN) brings the row back.
    asyncio.run(_write(stack, [f.account(10, 1, status="frozen")]))
    records, _, _ = neo.execute_query(
        "MATCH (a:Account {id: $a})<-[:OWNS]-(c) RETURN a.deleted AS d, a.status AS s, c.id AS c", a=f.id(10)
    )
    assert records[0].data() == {"d": False, "s": "frozen", "c": f.id(1)}


def test_injection_like_strings_are_stored_verbatim(stack, neo, factory):
    f = factory
    device_id = f.device_id(1) + HOSTILE
    asyncio.run(
        _write(
            stack,
            [
                f.customer(1, name=HOSTILE),
                f.device(device_id),
                f.login(50, 1, None, 1),
                f.delete("device", device_id + "'"),
            ],
        )
    )
    records, _, _ = neo.execute_query(
        "MATCH (c:Customer {id: $c}) MATCH (d:Device) WHERE d.id STARTS WITH $prefix "
        "RETURN c.full_name AS name, collect(d.id) AS devices",
        c=f.id(1),
        prefix=f.device_id(1),
    )
    assert records[0]["name"] == HOSTILE
    assert sorted(records[0]["devices"]) == sorted([device_id, device_id + "'"])
    assert _shape(neo, f.base)[0] == {"Customer": 1, "Device": 2, "IP": 1}


def test_a_failed_attempt_is_retried_and_the_batch_is_not_dropped(stack, neo, factory):
    f = factory

    class Flaky(GraphWriter):
        failures = 3

        async def _execute(self, plan):
            if self.failures:
                self.failures -= 1
                raise ServiceUnavailable("injected outage")
            return await super()._execute(plan)

    retries = metrics.WRITE_RETRIES._value.get()

    async def run():
        w = Flaky(stack.neo4j_uri, _auth(stack), retry_initial_s=0.01)
        async with w:
            for e in _scenario(f):
                await w.submit(e)
            await w.flush()
            return w.failures

    assert asyncio.run(run()) == 0
    assert metrics.WRITE_RETRIES._value.get() - retries == 3
    assert _shape(neo, f.base) == (EXPECTED_NODES, EXPECTED_RELS)


def test_flush_makes_everything_submitted_visible(stack, neo, factory):
    f = factory
    events = list(stream(f, 2_000, customers=50, merchants=10, devices=40, ips=30))
    tx_ids = {
        e.transaction_id for e in events if hasattr(e, "transaction_id") and type(e).__name__.startswith("Transaction")
    }

    async def run():
        async with _writer(stack, batch_size=200) as w:
            for e in events:
                await w.submit(e)
            await w.flush()
            # Visible to a different connection the moment flush returns.
            records, _, _ = neo.execute_query(
                "MATCH (t:Transaction) WHERE t.id >= $lo AND t.id < $hi AND t.version IS NOT NULL RETURN count(t) AS n",
                _params(f.base),
            )
            return records[0]["n"]

    assert asyncio.run(run()) == len(tx_ids)


def test_submit_blocks_when_the_queue_is_full_and_memory_stays_bounded():
    """Neo4j unreachable (a closed port): the drainer holds one batch and retries; the queue fills;
    submit then waits instead of growing memory; close() under a timeout still stops everything."""
    queue_size, batch_size = 20, 5
    f = EventFactory(base=1)

    async def run():
        w = GraphWriter(
            "bolt://127.0.0.1:1", queue_size=queue_size, batch_size=batch_size, retry_initial_s=0.01, retry_max_s=0.05
        )
        await w.start(ensure_schema=False)
        accepted, blocked = 0, False
        for i in range(queue_size + batch_size + 10):
            try:
                await asyncio.wait_for(w.submit(f.customer(i)), timeout=0.5)
                accepted += 1
            except TimeoutError:
                blocked = True
                break
        depth = w.queue_depth()
        retries = metrics.WRITE_RETRIES._value.get()
        await asyncio.sleep(0.3)
        still_retrying = metrics.WRITE_RETRIES._value.get() > retries
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(w.flush(), timeout=0.3)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(w.close(), timeout=0.3)  # cannot flush: cancelled, but still stops
        return accepted, blocked, depth, still_retrying, w._task.done()

    accepted, blocked, depth, still_retrying, stopped = asyncio.run(run())
    assert blocked, "submit never blocked: the queue is not bounded"
    assert depth == queue_size
    assert queue_size <= accepted <= queue_size + batch_size  # the queue plus the one batch in flight
    assert still_retrying and stopped
