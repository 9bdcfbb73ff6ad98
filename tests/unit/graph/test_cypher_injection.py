"""Cypher is never built from data: values travel only as parameters.

Two checks, each covering what the other cannot:

* Static: every Neo4j query call in the package (``.run(...)``, ``.execute_query(...)``) gets a query
  text that does not depend on the enclosing function's parameters, followed through local
  assignments and loops (a small taint analysis over ``ast``). Query texts built from the graph
  model's constants (labels, property names) are fine; that is how ``graph/cypher.py`` generates its
  statements once at import. The one allowed exception is a planned ``Statement``'s ``.cypher``,
  which the second check pins down.
* Runtime: ``plan_batch`` over events full of injection-looking strings only ever emits the fixed
  statement texts of ``graph.cypher.CYPHER``, with every string from the events in the parameters,
  verbatim.
"""

from __future__ import annotations

import ast
from dataclasses import fields
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from hypothesis import example, given, settings
from hypothesis import strategies as st

from fraudgraph.connectors.events import (
    AccountUpserted,
    CustomerUpserted,
    DeviceUpserted,
    EntityDeleted,
    FraudReported,
    LoginRecorded,
    MerchantUpserted,
    ProfileChanged,
    SourcePosition,
    TransactionCreated,
    TransactionUpdated,
)
from fraudgraph.graph.cypher import CYPHER, plan_batch

ROOT = Path(__file__).resolve().parents[3]
QUERY_METHODS = {"run", "execute_query"}
NOT_NEO4J = {"asyncio", "subprocess"}  # their .run() takes no Cypher
ALLOWED_ATTRIBUTE = "cypher"  # Statement.cypher: always a CYPHER value (test_planned_statements_...)


def _package_sources() -> list[Path]:
    skip = {"tests", ".hypothesis", ".git", ".venv", "build"}
    return [p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts)]


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _targets(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def _tainted_names(func: ast.FunctionDef | ast.AsyncFunctionDef, inherited: set[str]) -> set[str]:
    """The function's parameters (and its enclosing functions'), plus every local name assigned from
    an expression that mentions one, to a fixpoint."""
    a = func.args
    tainted = set(inherited) | {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs}
    tainted |= {x.arg for x in (a.vararg, a.kwarg) if x is not None}
    flows: list[tuple[set[str], ast.AST]] = []
    for node in ast.walk(func):
        if isinstance(node, ast.Assign):
            flows += [(_targets(t), node.value) for t in node.targets]
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and node.value is not None:
            flows.append((_targets(node.target), node.value))
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            flows.append((_targets(node.target), node.iter))
        elif isinstance(node, ast.NamedExpr):
            flows.append((_targets(node.target), node.value))
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            flows += [(_targets(i.optional_vars), i.context_expr) for i in node.items if i.optional_vars is not None]
    changed = True
    while changed:
        changed = False
        for targets, value in flows:
            if _names(value) & tainted and not targets <= tainted:
                tainted |= targets
                changed = True
    return tainted


def _own_nodes(func: ast.AST):
    """The nodes of a function's body, not those of functions nested in it (visited on their own)."""
    for child in ast.iter_child_nodes(func):
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield child
            yield from _own_nodes(child)


def _query_argument(call: ast.Call) -> ast.AST | None:
    for kw in call.keywords:
        if kw.arg in ("query", "query_"):
            return kw.value
    return call.args[0] if call.args else None


def _is_query_call(call: ast.Call) -> bool:
    f = call.func
    return (
        isinstance(f, ast.Attribute)
        and f.attr in QUERY_METHODS
        and not (isinstance(f.value, ast.Name) and f.value.id in NOT_NEO4J)
    )


def data_built_queries(source: str, filename: str = "<src>") -> tuple[list[str], int]:
    """(problems, query calls checked) for one module's source."""
    problems, checked = [], 0

    def visit(node: ast.AST, inherited: set[str]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                tainted = _tainted_names(child, inherited)
                for call in _own_nodes(child):
                    if isinstance(call, ast.Call) and _is_query_call(call):
                        check(call, tainted)
                visit(child, tainted)
            else:
                visit(child, inherited)

    def check(call: ast.Call, tainted: set[str]) -> None:
        nonlocal checked
        query = _query_argument(call)
        if query is None:
            return
        checked += 1
        if isinstance(query, ast.Attribute) and query.attr == ALLOWED_ATTRIBUTE:
            return
        leaked = _names(query) & tainted
        if leaked:
            problems.append(
                f"{filename}:{call.lineno}: query text depends on {sorted(leaked)} (pass data as parameters)"
            )

    visit(ast.parse(source, filename), set())
    return problems, checked


def test_no_query_text_in_the_package_is_built_from_data():
    problems, checked, files = [], 0, set()
    for path in _package_sources():
        found, n = data_built_queries(path.read_text(), str(path.relative_to(ROOT)))
        problems += found
        checked += n
        if n:
            files.add(str(path.relative_to(ROOT)))
    assert not problems, "\n".join(problems)
    # Not vacuous: the writer, the export and the stack's readiness probe are all among the calls checked.
    assert {"graph/writer.py", "graph/export.py", "stack/services.py"} <= files and checked >= 5, (files, checked)


def test_the_checker_catches_queries_built_from_data():
    bad = """
async def by_name(session, name):
    await session.run(f"MATCH (c:Customer {{full_name: '{name}'}}) RETURN c")

def by_label(driver, labels):
    for label in labels:
        driver.execute_query("MATCH (n:" + label + ") RETURN n")

def by_format(tx, key):
    q = "MATCH (d:Device {{id: '{}'}}) DETACH DELETE d".format(key)
    tx.run(q)

def nested(tx, ip):
    def inner():
        tx.run(query=f"MATCH (i:IP {{address: '{ip}'}}) RETURN i")
    inner()
"""
    good = """
import asyncio
QUERY = "MATCH (c:Customer {id: $id}) RETURN c"
LABELS = ("Customer", "Account")

async def fine(session, customer_id, stmt):
    await session.run(QUERY, id=customer_id)
    for label in LABELS:
        await session.run(f"MATCH (n:{label}) WHERE n.id = $id RETURN n", id=customer_id)
    await session.run(stmt.cypher, stmt.params)
    asyncio.run(something(customer_id))
"""
    problems, checked = data_built_queries(bad)
    assert checked == 4 and len(problems) == 4, problems
    assert any("['name']" in p for p in problems) and any("['label']" in p for p in problems)
    assert any("['q']" in p for p in problems) and any("['ip']" in p for p in problems)
    assert data_built_queries(good) == ([], 3)


# ---- runtime: what the planner sends ----

HOSTILE = st.sampled_from(
    [
        "x'}) DETACH DELETE n //",
        '"},{"admin":true',
        "$param",
        "$rows",
        "`Customer`",
        "\x00",
        "a\x00b",
        "\\",
        "'",
        '"',
        "}) MATCH (n) SET n.pwned = true //",
        "${x}",
        "\u202e",
        "𝕏",
        "CALL dbms.killQueries([])",
        "*/ RETURN 1 /*",
    ]
) | st.text(min_size=1, max_size=30)
T = datetime(2026, 1, 1, tzinfo=UTC)


@st.composite
def hostile_events(draw):
    s = lambda: draw(HOSTILE)
    lsn = draw(st.integers(1, 2**63 - 1))
    pos = SourcePosition(lsn, None, draw(st.integers(0, 2**62)))
    i = lambda: draw(st.integers(-(2**63), 2**63 - 1))
    kind = draw(
        st.sampled_from(
            ["customer", "account", "merchant", "device", "tx", "txu", "login", "change", "report", "delete"]
        )
    )
    if kind == "customer":
        return CustomerUpserted(pos, i(), s(), s(), draw(st.none() | HOSTILE), s(), i(), T)
    if kind == "account":
        return AccountUpserted(pos, i(), i(), s(), s(), s(), T)
    if kind == "merchant":
        return MerchantUpserted(pos, i(), s(), s(), s(), T)
    if kind == "device":
        return DeviceUpserted(pos, s(), draw(st.none() | HOSTILE), draw(st.none() | HOSTILE), T)
    if kind in ("tx", "txu"):
        common = dict(
            transaction_id=i(),
            account_id=i(),
            kind=s(),
            amount=Decimal("12.34"),
            currency=s(),
            merchant_id=draw(st.none() | st.integers()),
            counterparty_account_id=draw(st.none() | st.integers()),
            device_id=draw(st.none() | HOSTILE),
            ip=draw(st.none() | HOSTILE),
            status=s(),
            created_at=T,
            updated_at=T,
        )
        return (
            TransactionCreated(pos, **common)
            if kind == "tx"
            else TransactionUpdated(pos, previous_status=s(), **common)
        )
    if kind == "login":
        return LoginRecorded(pos, i(), i(), draw(st.none() | HOSTILE), s(), draw(st.booleans()), T)
    if kind == "change":
        return ProfileChanged(pos, i(), i(), s(), draw(st.none() | HOSTILE), draw(st.none() | HOSTILE), T)
    if kind == "report":
        return FraudReported(pos, i(), i(), s(), T)
    return EntityDeleted(
        pos, draw(st.sampled_from(["customer", "account", "merchant", "device", "transaction", "login"])), s()
    )


def _strings(value) -> set[str]:
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*map(_strings, value.values())) if value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*map(_strings, value)) if value else set()
    return set()


def _event_strings(event) -> set[str]:
    """The event's strings the graph keeps (a transaction update's previous status is not a graph property)."""
    return {
        v for v in (getattr(event, f.name) for f in fields(event) if f.name != "previous_status") if isinstance(v, str)
    }


@settings(max_examples=300, deadline=None)
@given(st.lists(hostile_events(), min_size=1, max_size=20))
def test_planned_statements_are_the_fixed_texts_whatever_the_data(events):
    texts = set(CYPHER.values())
    for stmt in plan_batch(events).statements:
        assert stmt.cypher in texts  # one fixed text per statement kind: no value can reach the query text
        assert set(stmt.params) == {"rows"}


@settings(max_examples=500, deadline=None)
@given(hostile_events())
@example(EntityDeleted(SourcePosition(1, None, 0), "customer", "0"))  # an integer key given as text
def test_every_string_of_an_event_is_sent_verbatim_as_a_parameter(event):
    plan = plan_batch([event])
    sent = _strings([stmt.params for stmt in plan.statements])
    own = _event_strings(event)
    if isinstance(event, EntityDeleted):
        # The key travels verbatim for a text-keyed entity, as the integer it parses to for an
        # integer-keyed one ("0" -> 0), and not at all when it does not parse (the event is skipped).
        keys = [row["key"] for stmt in plan.statements for row in stmt.params["rows"]]
        assert keys in ([], [event.key]) or keys == [int(event.key)], (keys, event.key)
        own = {k for k in keys if isinstance(k, str)}
    assert own <= sent, own - sent
    assert sent - own <= {T.isoformat(), "12.34"}  # nothing else: timestamps and the amount's exact text
