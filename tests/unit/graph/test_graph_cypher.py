"""The graph planner (graph/cypher.py), no services: parameters only, newest per key, fixed order."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from fraudgraph.graph import model
from fraudgraph.graph.cypher import CYPHER, Statement, plan, plan_batch, schema_statements
from fraudgraph.graph.synthetic import EventFactory, stream

HOSTILE = "x'}) DETACH DELETE n //"


def _strings(value) -> list[str]:
    """Every string inside a params structure."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return []


def _everything(f: EventFactory):
    return [
        f.customer(1, name=HOSTILE),
        f.account(2, 1),
        f.merchant(3, name=HOSTILE + "m"),
        f.device(HOSTILE),
        f.device(4),
        f.card_payment(5, 2, 3, device=4, ip=1),
        f.transfer(6, 2, 7, device=4, ip=2),
        f.login(8, 1, 4, 1),
        f.login(9, 1, None, 3),
        f.profile_change(10, 1, 4),
        f.profile_change(11, 1, None),
        f.fraud_report(12, 5),
        f.delete("device", HOSTILE + "d"),
        f.delete("account", 7),
        f.delete("login", 9),
        f.delete("profile_change", 11),
        f.delete("fraud_report", 12),
        f.delete("customer", 13),
        f.delete("merchant", 14),
        f.delete("transaction", 15),
    ]


def test_cypher_text_holds_no_event_values_only_parameters():
    f = EventFactory(base=987_654_321_000)
    statements = plan(_everything(f))
    assert {s.kind for s in statements} == set(CYPHER)  # every kind exercised
    for stmt in statements:
        assert stmt.cypher == CYPHER[stmt.kind]  # one fixed text per kind, whatever the data
        assert HOSTILE not in stmt.cypher and "987654321" not in stmt.cypher and "dev-" not in stmt.cypher
        assert set(stmt.params) == {"rows"}
    carried = [s for stmt in statements for s in _strings(stmt.params)]
    assert HOSTILE in carried and HOSTILE + "m" in carried and HOSTILE + "d" in carried


def test_every_label_and_relationship_in_the_text_comes_from_the_model():
    import re

    labels = {n.label for n in model.NODE_TYPES}
    for cypher in CYPHER.values():
        assert set(re.findall(r"\(\w*:(\w+)", cypher)) <= labels
        assert set(re.findall(r"\[\w*:(\w+)", cypher)) <= set(model.REL_TYPES)


def test_rows_keep_source_types():
    f = EventFactory(base=1_000)
    [tx] = plan([f.card_payment(5, 2, 3, device=4, ip=1, amount="1234567.89")])
    row = tx.rows[0]
    assert row["key"] == 1_005 and row["account_id"] == 1_002 and row["merchant_id"] == 1_003
    assert row["counterparty_account_id"] is None and row["device_id"] == "dev-1000-4"
    assert row["props"]["amount"] == 1234567.89 and row["props"]["amount_text"] == "1234567.89"
    assert not any(isinstance(v, Decimal) for v in row["props"].values())
    deletes = plan([f.delete("device", "abc"), f.delete("account", 7)])
    assert [(s.kind, s.rows[0]["key"]) for s in deletes] == [("delete_account", 1_007), ("delete_device", "abc")]


def test_newest_event_per_key_wins_within_a_batch():
    f = EventFactory(base=0)
    old, new = f.customer(1, name="old"), f.customer(1, name="new")
    for batch in ([old, new], [new, old]):
        result = plan_batch(batch)
        [stmt] = result.statements
        assert [r["props"]["full_name"] for r in stmt.rows] == ["new"] and result.superseded == 1
    # Created then Updated: one row, the update.
    [stmt] = plan([f.card_payment(1, 2, 3), f.card_payment(1, 2, 3, status="settled", updated=True)])
    assert [r["props"]["status"] for r in stmt.rows] == ["settled"]
    # Equal versions: the later event in the batch wins.
    p = f.pos()
    [stmt] = plan([f.account(1, 1, status="active", position=p), f.account(1, 1, status="frozen", position=p)])
    assert [r["props"]["status"] for r in stmt.rows] == ["frozen"]
    # Upsert then delete of the same row: only the delete; delete then re-insert: only the upsert.
    assert [s.kind for s in plan([f.device(1), f.delete("device", f.device_id(1))])] == ["delete_device"]
    assert [s.kind for s in plan([f.delete("device", f.device_id(1)), f.device(1)])] == ["upsert_device"]
    # Two reports on one transaction: the newest report only (they write the same node).
    [stmt] = plan([f.fraud_report(1, 9, kind="chargeback"), f.fraud_report(2, 9, kind="confirmed_fraud")])
    assert [r["kind"] for r in stmt.rows] == ["confirmed_fraud"]


def test_statement_order_is_fixed_and_rows_keep_batch_order():
    f = EventFactory(base=0)
    batch = [f.delete("account", 9), f.login(1, 1, 1, 1), f.card_payment(3, 1, 1), f.customer(2), f.customer(1)]
    first = plan(batch)
    assert [s.kind for s in first] == ["upsert_customer", "upsert_transaction", "upsert_login", "delete_account"]
    assert [r["key"] for r in first[0].rows] == [2, 1]
    assert plan(batch) == first  # same input, same statements
    order = list(CYPHER)
    assert all(k.startswith("upsert_") for k in order[: len(order) // 2])
    assert all(k.startswith("delete_") for k in order[len(order) // 2 :])


def test_truncate_unknown_entity_and_bad_key_are_skipped_and_counted():
    f = EventFactory(base=0)
    result = plan_batch(
        [f.truncate("transaction"), f.delete("no_such_table", 1), f.delete("account", "not-an-int"), f.customer(1)]
    )
    assert [s.kind for s in result.statements] == ["upsert_customer"]
    assert dict(result.skipped) == {"truncate": 1, "unknown_entity": 1, "bad_key": 1}
    assert plan([]) == []


def test_a_text_keyed_entity_is_deleted_by_its_text_key():
    f = EventFactory(base=0)
    text, digits = f.delete("account", "LDN/42"), f.delete("customer", "17")
    result = plan_batch([dataclasses.replace(text, text_key=True), dataclasses.replace(digits, text_key=True)])
    rows = {s.kind: s.rows for s in result.statements}
    assert rows["delete_account"][0]["key"] == "LDN/42" and not result.skipped
    assert rows["delete_customer"][0]["key"] == "17"  # text "17" is not the integer 17 a number-keyed bank would have


def test_schema_has_a_unique_constraint_per_label_and_the_lookup_indexes():
    stmts = schema_statements()
    for node in model.NODE_TYPES:
        assert any(f"FOR (n:{node.label}) REQUIRE n.{node.key} IS UNIQUE" in s for s in stmts)
    for rel in ("LOGGED_IN", "LOGIN_FROM", "CHANGED_PROFILE"):
        assert any(f"()-[r:{rel}]-()" in s for s in stmts)
    assert all("IF NOT EXISTS" in s for s in stmts)


def test_synthetic_stream_plans_without_errors():
    f = EventFactory(base=0)
    events = list(stream(f, 3_000))
    assert len(events) == 3_000
    statements = plan(events)
    assert sum(len(s.rows) for s in statements) <= 3_000
    assert all(isinstance(s, Statement) for s in statements)


# ---- property: whatever the interleaving, each key ends with its newest event ----

_keys = st.integers(min_value=1, max_value=4)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["customer", "device", "login", "delete_customer"]),
            _keys,
            st.integers(min_value=1, max_value=50),
        ),
        max_size=30,
    )
)
def test_plan_keeps_exactly_the_newest_event_per_key(spec):
    f = EventFactory(base=0)
    events = []
    for kind, key, version in spec:
        p = f.pos(lsn=version)
        if kind == "customer":
            events.append(f.customer(key, position=p))
        elif kind == "device":
            events.append(f.device(key, position=p))
        elif kind == "login":
            events.append(f.login(key, 1, key, key, position=p))
        else:
            events.append(f.delete("customer", key, position=p))
    expected: dict = {}
    for kind, key, version in spec:
        family = "customer" if kind in ("customer", "delete_customer") else kind
        held = expected.get((family, key))
        if held is None or held[0] <= version:
            expected[(family, key)] = (version, kind)
    got = {}
    for stmt in plan(events):
        family = stmt.kind.split("_", 1)[1]
        for row in stmt.rows:
            key = row["key"] if isinstance(row["key"], int) else int(row["key"].rsplit("-", 1)[1])
            assert (family, key) not in got, "two rows for one key in a batch"
            got[(family, key)] = (row["version"], "delete_customer" if stmt.kind == "delete_customer" else family)
    assert got == expected
    assert all(dataclasses.is_dataclass(e) for e in events)
