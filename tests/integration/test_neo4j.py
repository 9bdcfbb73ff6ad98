"""The real Neo4j server over Bolt stores nodes and relationships and reads them back."""

import uuid

from neo4j import GraphDatabase


def _driver(settings):
    auth = (settings.neo4j_user, settings.neo4j_password) if settings.neo4j_password else None
    return GraphDatabase.driver(settings.neo4j_uri, auth=auth)


def test_write_and_read_nodes_and_relationships(stack):
    run = uuid.uuid4().hex
    with _driver(stack) as driver:
        driver.execute_query(
            """
            UNWIND $rows AS row
            MERGE (a:TestAccount {id: row.src, run: $run})
            MERGE (b:TestAccount {id: row.dst, run: $run})
            CREATE (a)-[:TEST_TRANSFER {amount: row.amount}]->(b)
            """,
            rows=[
                {"src": 1, "dst": 2, "amount": 10.5},
                {"src": 2, "dst": 3, "amount": 7.25},
                {"src": 1, "dst": 3, "amount": 1.0},
            ],
            run=run,
        )
        records, _, _ = driver.execute_query(
            "MATCH (a:TestAccount {run: $run})-[t:TEST_TRANSFER]->(b) RETURN a.id AS src, b.id AS dst, t.amount AS amount ORDER BY src, dst",
            run=run,
        )
        assert [(r["src"], r["dst"], r["amount"]) for r in records] == [(1, 2, 10.5), (1, 3, 1.0), (2, 3, 7.25)]
        # A string that looks like Cypher is stored verbatim: it only ever travels as a parameter.
        hostile = "x'}) DETACH DELETE n //"
        driver.execute_query("CREATE (:TestAccount {id: $v, run: $run})", v=hostile, run=run)
        records, _, _ = driver.execute_query(
            "MATCH (n:TestAccount {run: $run}) RETURN count(n) AS n, collect(n.id) AS ids", run=run
        )
        assert records[0]["n"] == 4 and hostile in records[0]["ids"]
        driver.execute_query("MATCH (n:TestAccount {run: $run}) DETACH DELETE n", run=run)


def test_neo4j_browser_is_served_for_analysts(stack):
    """The local stack ships Neo4j Browser (from Maven Central) at the HTTP port."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{stack.neo4j_http_port}/browser/", timeout=10) as resp:
        assert resp.status == 200 and b"Neo4j Browser" in resp.read()
