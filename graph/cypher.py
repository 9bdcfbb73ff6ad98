"""Plan a batch of domain events into a few parameterised, idempotent, version-guarded Cypher writes.

``plan(events)`` is pure (no I/O), so what reaches Neo4j can be tested without a server.

Why it is shaped this way:

- **Parameters only.** The Cypher text of every statement is generated from ``model.py`` constants
  alone; every value from an event travels in ``$rows``. A device id such as ``x'}) DETACH DELETE n //``
  is therefore just a string, and the number of distinct query texts stays tiny (one per statement
  kind), so Neo4j's query plan cache is always hit.
- **UNWIND per kind.** A batch of 500 events becomes at most a dozen statements (one per kind, e.g.
  ``upsert_transaction``), each a single round trip with all its rows.
- **Idempotent and version-guarded.** Everything is MERGEd by key and stores ``version`` (the source
  LSN). A row is applied only if its version is newer than the stored one, so a replay (crash,
  consumer-group reset) or a late older event changes nothing.
- **Newest per key within a batch.** Only the newest event per source row survives planning (ties:
  the later one in the batch), so one statement never holds two rows for the same key.
- **Deletes are tombstones.** ``EntityDeleted`` does not DETACH DELETE: the node stays with
  ``deleted=true``, the delete's ``version``, and its row properties cleared (a delete is often an
  erasure); the edges its own row owned are removed. A late or replayed older upsert then meets a
  newer version and is ignored instead of resurrecting the row; a re-insert at the source (a newer
  LSN) brings it back. Readers filter ``deleted`` (``export.py`` does). Fact rows (logins, profile
  changes) are relationships, so their tombstones are relationships with ``deleted=true``; a fraud
  report's tombstone is ``fraud_report_deleted=true`` on its transaction. A delete for a fact or
  report never seen leaves nothing behind (there is nothing to hang a tombstone on), which is safe
  because per-key order is preserved: its upsert cannot arrive after it except in a replay that
  replays the delete too.
- **TableTruncated is not applied**: a TRUNCATE carries no keys, and wiping a label on a source
  truncate is not something to do implicitly. It is counted (``Plan.skipped``) and left to operators.
- Statement order is fixed (upserts by kind, then deletes by kind), rows keep batch order: the same
  batch always produces the same statements.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fraudgraph.connectors.events import (
    AccountUpserted,
    CustomerUpserted,
    DeviceUpserted,
    DomainEvent,
    EntityDeleted,
    FraudReported,
    LoginRecorded,
    MerchantUpserted,
    ProfileChanged,
    TableTruncated,
    TransactionCreated,
    TransactionRow,
    TransactionUpdated,
)
from fraudgraph.graph import model as m


@dataclass(frozen=True)
class Statement:
    kind: str  # e.g. "upsert_transaction", "delete_account": one fixed Cypher text per kind
    cypher: str
    params: dict[str, Any]

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.params["rows"]


@dataclass
class Plan:
    statements: list[Statement]
    superseded: int = 0  # events dropped because a newer one for the same key is in the batch
    skipped: Counter = field(default_factory=Counter)  # reason -> events not applied to the graph


# ---------------------------------------------------------------------------------------------
# Cypher text, generated once from the model
# ---------------------------------------------------------------------------------------------


def _set_timestamps(var: str, props) -> str:
    """``, x.p = datetime(row.t.p)`` for each timestamp property (see model.TIMESTAMP_PROPS)."""
    return "".join(f", {var}.{p} = datetime(row.t.{p})" for p in props if p in m.TIMESTAMP_PROPS)


def _min_first_ts(var: str) -> str:
    return (
        f"{var}.{m.FIRST_TS_MS} = CASE WHEN {var}.{m.FIRST_TS_MS} <= row.ts_ms "
        f"THEN {var}.{m.FIRST_TS_MS} ELSE row.ts_ms END"
    )


def _merge_node(var: str, node: m.NodeType, key_expr: str) -> str:
    return f"MERGE ({var}:{node.label} {{{node.key}: {key_expr}}}) ON CREATE SET {var}.{m.FIRST_TS_MS} = row.ts_ms"


def _arrow(a: str, rel: str, b: str, outgoing: bool) -> str:
    return f"({a})-[{rel}]->({b})" if outgoing else f"({a})<-[{rel}]-({b})"


def _node_upsert(node: m.NodeType) -> str:
    lines = [
        "UNWIND $rows AS row",
        _merge_node("n", node, "row.key"),
        "WITH n, row",
        f"WHERE n.{m.VERSION} IS NULL OR n.{m.VERSION} < row.version",
        f"SET n += row.props{_set_timestamps('n', node.props)}, n.{m.VERSION} = row.version, n.{m.TS_MS} = row.ts_ms, "
        f"n.{m.DELETED} = false, " + _min_first_ts("n"),
        "WITH n, row",
    ]
    for i, link in enumerate(m.NODE_LINKS.get(node.label, ())):
        o, r, other = f"o{i}", f"r{i}", link.other
        # The row's edge of this type now points elsewhere (or nowhere): drop the stale one.
        lines.append(
            f"CALL (n, row) {{ MATCH {_arrow('n', 'old:' + link.rel, 'x:' + other.label, link.outgoing)} "
            f"WHERE row.{link.field} IS NULL OR x.{other.key} <> row.{link.field} DELETE old }}"
        )
        lines.append(
            f"FOREACH (k IN CASE WHEN row.{link.field} IS NULL THEN [] ELSE [row.{link.field}] END | "
            f"{_merge_node(o, other, 'k')} "
            f"MERGE {_arrow('n', r + ':' + link.rel, o, link.outgoing)} ON CREATE SET {r}.{m.FIRST_TS_MS} = row.ts_ms "
            f"SET {r}.{m.VERSION} = row.version, {r}.{m.TS_MS} = row.ts_ms, {r}.{m.DELETED} = false)"
        )
        lines.append("WITH n, row")
    lines.append("RETURN count(*) AS applied")
    return "\n".join(lines)


def _node_delete(node: m.NodeType) -> str:
    clear = "".join(f"n.{p} = null, " for p in node.props)
    lines = [
        "UNWIND $rows AS row",
        _merge_node("n", node, "row.key"),  # a tombstone even for a never-seen row: nothing older resurrects it
        "WITH n, row",
        f"WHERE n.{m.VERSION} IS NULL OR n.{m.VERSION} < row.version",
        f"SET {clear}n.{m.VERSION} = row.version, n.{m.TS_MS} = row.ts_ms, n.{m.DELETED} = true",
        "WITH n, row",
    ]
    for link in m.NODE_LINKS.get(node.label, ()):
        lines.append(
            f"CALL (n) {{ MATCH {_arrow('n', 'old:' + link.rel, 'x:' + link.other.label, link.outgoing)} DELETE old }}"
        )
    lines.append("RETURN count(*) AS applied")
    return "\n".join(lines)


def _fact_upsert(fact: m.FactType) -> str:
    lines = ["UNWIND $rows AS row"]
    for i, e in enumerate(fact.edges):  # every edge of this fact row, whatever its endpoints
        lines.append(f"OPTIONAL MATCH ()-[old{i}:{e.rel} {{{fact.key}: row.key}}]->()")
        lines.append("WITH row, " + "".join(f"olds{j}, " for j in range(i)) + f"collect(old{i}) AS olds{i}")
    lines += [
        "WITH row, " + " + ".join(f"olds{i}" for i in range(len(fact.edges))) + " AS olds",
        f"WHERE none(o IN olds WHERE coalesce(o.{m.VERSION}, -1) >= row.version)",
        f"WITH row, olds, reduce(f = row.ts_ms, o IN olds | CASE WHEN o.{m.FIRST_TS_MS} < f "
        f"THEN o.{m.FIRST_TS_MS} ELSE f END) AS first",
        # Recreated rather than updated in place: an update may move an edge to other endpoints.
        "FOREACH (o IN olds | DELETE o)",
    ]
    for i, e in enumerate(fact.edges):
        s, t, r = f"s{i}", f"t{i}", f"r{i}"
        set_rel = (
            f"SET {r} += row.props{_set_timestamps(r, fact.props)}, {r}.{fact.key} = row.key, {r}.{m.VERSION} = row.version, "
            f"{r}.{m.TS_MS} = row.ts_ms, {r}.{m.FIRST_TS_MS} = first, {r}.{m.DELETED} = false"
        )
        src = _merge_node(s, e.source, f"row.{e.source_field}")
        lines.append(
            f"FOREACH (k IN CASE WHEN row.{e.target_field} IS NULL THEN [] ELSE [row.{e.target_field}] END | "
            f"{src} {_merge_node(t, e.target, 'k')} CREATE ({s})-[{r}:{e.rel}]->({t}) {set_rel})"
        )
        if e.self_if_missing:
            lines.append(
                f"FOREACH (k IN CASE WHEN row.{e.target_field} IS NULL THEN [1] ELSE [] END | "
                f"{src} CREATE ({s})-[{r}:{e.rel}]->({s}) {set_rel})"
            )
    lines.append("RETURN count(*) AS applied")
    return "\n".join(lines)


def _fact_delete(fact: m.FactType) -> str:
    clear = "".join(f"r.{p} = null, " for p in fact.props)
    lines = ["UNWIND $rows AS row"]
    for e in fact.edges:
        lines.append(
            f"CALL (row) {{ MATCH ()-[r:{e.rel} {{{fact.key}: row.key}}]->() "
            f"WHERE r.{m.VERSION} IS NULL OR r.{m.VERSION} < row.version "
            f"SET {clear}r.{m.VERSION} = row.version, r.{m.TS_MS} = row.ts_ms, r.{m.DELETED} = true }}"
        )
    lines.append("RETURN count(*) AS applied")
    return "\n".join(lines)


_T = m.TRANSACTION.label
_FR_TOMBSTONE = (
    f"{{v}}.{m.FRAUD_REPORT_KIND} = null, {{v}}.{m.FRAUD_REPORTED_AT} = null, "
    f"{{v}}.{m.FRAUD_REPORT_DELETED} = true, {{v}}.{m.FRAUD_REPORT_VERSION} = row.version, "
    f"{{v}}.{m.FRAUD_REPORT_TS_MS} = row.ts_ms"
)

FRAUD_REPORT_UPSERT = "\n".join(
    [
        "UNWIND $rows AS row",
        _merge_node("t", m.TRANSACTION, "row.transaction_id"),
        "WITH t, row",
        f"WHERE t.{m.FRAUD_REPORT_VERSION} IS NULL OR t.{m.FRAUD_REPORT_VERSION} < row.version",
        # A report that moved to another transaction leaves a tombstone on the old one.
        f"CALL (t, row) {{ MATCH (o:{_T} {{{m.FRAUD_REPORT_ID}: row.key}}) WHERE o <> t AND o.{m.FRAUD_REPORT_VERSION} < row.version "
        f"SET {_FR_TOMBSTONE.format(v='o')} }}",
        f"SET t.{m.FRAUD_REPORT_ID} = row.key, t.{m.FRAUD_REPORT_KIND} = row.kind, t.{m.FRAUD_REPORTED_AT} = datetime(row.reported_at), "
        f"t.{m.FRAUD_REPORT_VERSION} = row.version, t.{m.FRAUD_REPORT_TS_MS} = row.ts_ms, t.{m.FRAUD_REPORT_DELETED} = false",
        "RETURN count(*) AS applied",
    ]
)

FRAUD_REPORT_DELETE = "\n".join(
    [
        "UNWIND $rows AS row",
        f"MATCH (t:{_T} {{{m.FRAUD_REPORT_ID}: row.key}})",
        f"WHERE t.{m.FRAUD_REPORT_VERSION} < row.version",
        f"SET {_FR_TOMBSTONE.format(v='t')}",
        "RETURN count(*) AS applied",
    ]
)

# kind -> Cypher, in the order statements run.
CYPHER: dict[str, str] = {}
for _n in m.NODE_TYPES:
    if _n.entity:
        CYPHER[f"upsert_{_n.entity}"] = _node_upsert(_n)
for _f in m.FACT_TYPES:
    CYPHER[f"upsert_{_f.entity}"] = _fact_upsert(_f)
CYPHER[f"upsert_{m.FRAUD_REPORT_ENTITY}"] = FRAUD_REPORT_UPSERT
for _n in m.NODE_TYPES:
    if _n.entity:
        CYPHER[f"delete_{_n.entity}"] = _node_delete(_n)
for _f in m.FACT_TYPES:
    CYPHER[f"delete_{_f.entity}"] = _fact_delete(_f)
CYPHER[f"delete_{m.FRAUD_REPORT_ENTITY}"] = FRAUD_REPORT_DELETE
_ORDER = {kind: i for i, kind in enumerate(CYPHER)}


def schema_statements() -> list[str]:
    """Uniqueness constraints (they also back the MERGE lookups) and the indexes the writes use."""
    out = [
        f"CREATE CONSTRAINT fraudgraph_{n.label.lower()}_{n.key} IF NOT EXISTS "
        f"FOR (n:{n.label}) REQUIRE n.{n.key} IS UNIQUE"
        for n in m.NODE_TYPES
    ]
    out += [
        f"CREATE INDEX fraudgraph_{e.rel.lower()}_{f.key} IF NOT EXISTS FOR ()-[r:{e.rel}]-() ON (r.{f.key})"
        for f in m.FACT_TYPES
        for e in f.edges
    ]
    out.append(
        f"CREATE INDEX fraudgraph_transaction_{m.FRAUD_REPORT_ID} IF NOT EXISTS FOR (n:{_T}) ON (n.{m.FRAUD_REPORT_ID})"
    )
    return out


# ---------------------------------------------------------------------------------------------
# Events -> rows
# ---------------------------------------------------------------------------------------------


def _value(v: Any) -> Any:
    # Neo4j has no decimal type; amounts get a float twin plus exact text (see model.TRANSACTION).
    return float(v) if isinstance(v, Decimal) else v


def _iso(v: datetime | None) -> str | None:
    """A timestamp as ISO-8601 text for Cypher's datetime() (naive values are UTC, as the source's are)."""
    if v is None:
        return None
    return (v if v.tzinfo else v.replace(tzinfo=UTC)).isoformat()


def _split_props(event: DomainEvent, names) -> tuple[dict[str, Any], dict[str, str | None]]:
    props, stamps = {}, {}
    for p in names:
        if p == "amount_text":
            assert isinstance(event, TransactionRow)  # only the Transaction node has amount_text
            props[p] = str(event.amount)
        elif p in m.TIMESTAMP_PROPS:
            stamps[p] = _iso(getattr(event, p))
        else:
            props[p] = _value(getattr(event, p))
    return props, stamps


def _base(event: DomainEvent, key: Any) -> dict[str, Any]:
    return {"key": key, "version": event.position.version, "ts_ms": event.position.ts_ms}


_NODE_EVENTS: dict[type, tuple[m.NodeType, str]] = {
    CustomerUpserted: (m.CUSTOMER, "customer_id"),
    AccountUpserted: (m.ACCOUNT, "account_id"),
    MerchantUpserted: (m.MERCHANT, "merchant_id"),
    DeviceUpserted: (m.DEVICE, "device_id"),
    TransactionCreated: (m.TRANSACTION, "transaction_id"),
    TransactionUpdated: (m.TRANSACTION, "transaction_id"),
}
_FACT_EVENTS: dict[type, tuple[m.FactType, str]] = {
    LoginRecorded: (m.LOGIN, "login_id"),
    ProfileChanged: (m.PROFILE_CHANGE, "change_id"),
}


def _node_row(event: DomainEvent, node: m.NodeType, key_field: str) -> dict[str, Any]:
    row = _base(event, getattr(event, key_field))
    row["props"], row["t"] = _split_props(event, node.props)
    for link in m.NODE_LINKS.get(node.label, ()):
        row[link.field] = getattr(event, link.field)
    return row


def _fact_row(event: DomainEvent, fact: m.FactType, key_field: str) -> dict[str, Any]:
    row = _base(event, getattr(event, key_field))
    row["props"], row["t"] = _split_props(event, fact.props)
    for e in fact.edges:
        row[e.source_field] = getattr(event, e.source_field)
        row[e.target_field] = getattr(event, e.target_field)
    return row


def _classify(event: DomainEvent) -> tuple[str, tuple[str, Any], dict[str, Any]] | str:
    """(statement kind, dedup key, row), or the reason the event is not applied."""
    if type(event) in _NODE_EVENTS:
        node, key_field = _NODE_EVENTS[type(event)]
        assert node.entity is not None  # an event's node type is the one its entity's rows write
        row = _node_row(event, node, key_field)
        return f"upsert_{node.entity}", (node.entity, row["key"]), row
    if type(event) in _FACT_EVENTS:
        fact, key_field = _FACT_EVENTS[type(event)]
        row = _fact_row(event, fact, key_field)
        return f"upsert_{fact.entity}", (fact.entity, row["key"]), row
    if isinstance(event, FraudReported):
        row = _base(event, event.report_id)
        row.update(transaction_id=event.transaction_id, kind=event.kind, reported_at=_iso(event.reported_at))
        return f"upsert_{m.FRAUD_REPORT_ENTITY}", (m.FRAUD_REPORT_ENTITY, event.report_id), row
    if isinstance(event, EntityDeleted):
        deleted = m.NODE_BY_ENTITY.get(event.entity)
        key_type = deleted.key_type if deleted else int  # facts and fraud reports have integer ids
        if deleted is None and event.entity not in m.FACT_BY_ENTITY and event.entity != m.FRAUD_REPORT_ENTITY:
            return "unknown_entity"
        try:
            key = event.key if event.text_key else key_type(event.key)
        except (TypeError, ValueError):
            return "bad_key"
        return f"delete_{event.entity}", (event.entity, key), _base(event, key)
    if isinstance(event, TableTruncated):
        return "truncate"
    return "unsupported_event"


def plan_batch(events: Iterable[DomainEvent]) -> Plan:
    """The statements for a batch, plus what was dropped and why (for metrics and logs)."""
    newest: dict[tuple[str, Any], tuple[int, int, str, dict]] = {}  # key -> (version, index, kind, row)
    skipped: Counter = Counter()
    superseded = 0
    for i, event in enumerate(events):
        c = _classify(event)
        if isinstance(c, str):
            skipped[c] += 1
            continue
        kind, key, row = c
        if kind == f"upsert_{m.FRAUD_REPORT_ENTITY}":
            # Reports are stored on their transaction, so two reports for one transaction would be
            # two rows writing one node in one statement: keep the newest per transaction as well.
            key = ("fraud_report_of", row["transaction_id"])
        held = newest.get(key)
        if held is not None:
            superseded += 1
            if held[0] > row["version"]:
                continue  # an older event after a newer one for the same row: drop it
        newest[key] = (row["version"], i, kind, row)
    by_kind: dict[str, list[tuple[int, dict]]] = {}
    for _, i, kind, row in newest.values():
        by_kind.setdefault(kind, []).append((i, row))
    statements = [
        Statement(kind, CYPHER[kind], {"rows": [row for _, row in sorted(rows, key=lambda x: x[0])]})
        for kind, rows in sorted(by_kind.items(), key=lambda kv: _ORDER[kv[0]])
    ]
    return Plan(statements, superseded, skipped)


def plan(events: list[DomainEvent]) -> list[Statement]:
    """A batch of domain events -> parameterised UNWIND statements, one per statement kind."""
    return plan_batch(events).statements
