"""Point-in-time export (graph/export.py) against the real Neo4j."""

from __future__ import annotations

import asyncio
import random

from neo4j import GraphDatabase

from fraudgraph.graph.export import edge_types, export_subgraph
from fraudgraph.graph.synthetic import EventFactory
from fraudgraph.graph.writer import GraphWriter


def _auth(settings):
    return (settings.neo4j_user, settings.neo4j_password) if settings.neo4j_password else None


def test_export_until_ms_sees_only_the_past_and_no_tombstones(stack):
    base = random.randrange(10**12, 9 * 10**12, 10**8)
    f = EventFactory(base=base)
    # Source times in the 1990s: only this test's nodes (and any a failed run of it left) are that
    # old, so both exports stay small however large the shared development graph has grown.
    t = random.randrange(631_152_000_000, 946_684_800_000, 10**6)

    def at(ms):
        return f.pos(ts_ms=t + ms)

    events = [
        f.customer(1, position=at(0)),
        f.account(10, 1, position=at(1)),
        f.merchant(20, position=at(2)),
        f.device(30, position=at(3)),
        f.card_payment(40, 10, 20, device=30, ip=1, position=at(10)),  # before the cut
        f.card_payment(41, 10, 20, position=at(100)),  # after the cut
        f.login(50, 1, 30, 1, position=at(11)),
        f.fraud_report(70, 40, position=at(200)),  # label arrives after the cut
        f.customer(2, position=at(5)),
        f.delete("customer", 2, position=at(6)),  # deleted before the cut
    ]

    async def write():
        async with GraphWriter(stack.neo4j_uri, _auth(stack)) as w:
            for e in events:
                await w.submit(e)
            await w.flush()

    asyncio.run(write())
    with GraphDatabase.driver(stack.neo4j_uri, auth=_auth(stack), notifications_min_severity="OFF") as driver:
        try:
            past = export_subgraph(driver, until_ms=t + 50)
            later = export_subgraph(driver, until_ms=t + 1_000)
        finally:
            driver.execute_query(
                "MATCH (n) WHERE ((n:Customer OR n:Account OR n:Merchant OR n:Transaction) AND n.id >= $lo AND n.id < $hi) "
                "OR (n:Device AND n.id STARTS WITH $dev) OR (n:IP AND n.address ENDS WITH $ip) DETACH DELETE n",
                lo=base,
                hi=base + 10**8,
                dev=f"dev-{base}-",
                ip=f"|{base}",
            )

    def ours(sub, label):
        return {
            k: p
            for k, p in zip(sub.node_keys[label], sub.node_props[label])
            if (isinstance(k, int) and base <= k < base + 10**8) or (isinstance(k, str) and str(base) in k)
        }

    assert set(ours(past, "Transaction")) == {f.id(40)}
    assert set(ours(later, "Transaction")) == {f.id(40), f.id(41)}
    assert "fraud_report_kind" not in ours(past, "Transaction")[f.id(40)]  # not known yet at the cut
    assert ours(later, "Transaction")[f.id(40)]["fraud_report_kind"] == "confirmed_fraud"
    assert set(ours(past, "Customer")) == {f.id(1)}  # customer 2 is a tombstone
    assert "version" not in ours(later, "Customer")[f.id(1)]  # bookkeeping is not a feature
    assert len(ours(past, "IP")) == 1 and len(ours(past, "Device")) == 1

    pays = ("Transaction", "PAYS", "Merchant")
    assert (f.id(40), f.id(20)) in past.edges[pays] and (f.id(41), f.id(20)) not in past.edges[pays]
    assert (f.id(41), f.id(20)) in later.edges[pays]
    idx = past.edge_index(pays)
    assert idx.shape == (2, len(past.edges[pays]))
    j = past.edges[pays].index((f.id(40), f.id(20)))
    assert past.node_keys["Transaction"][idx[0, j]] == f.id(40) and past.node_keys["Merchant"][idx[1, j]] == f.id(20)
    assert set(past.edges) == set(edge_types())
