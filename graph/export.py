"""Point-in-time export of the graph for training: typed nodes and edges as plain Python data.

``export_subgraph(driver, until_ms=T)`` returns what existed at source time ``T``: nodes and
relationships whose ``first_ts_ms`` (earliest source commit that wrote them, see ``model.py``) is
``<= T``, without tombstoned ones (``deleted``) and without edges to them. Fraud labels are included
only if reported by ``T`` (``fraud_report_ts_ms <= T``), so a training set cut at ``T`` never sees a
label from its future.

Deliberately simple, and the limits that come with it:

- The graph keeps current state, not history: properties are the latest ones (a transaction settled
  after ``T`` shows ``status='settled'``), and a row deleted after ``T`` is missing. Features that must
  be as-of ``T`` belong in the event log / feature store, not here.
- The result is held in client memory (it is the return value), one query per node label and per
  edge type. The server only streams: no query sorts or collects, so its heap stays bounded however
  large the graph (an ``ORDER BY`` over every node's properties ran a 1 GiB Neo4j out of heap at a
  million nodes). Sorting happens here.

The result is index-ready for a heterogeneous GNN: node keys per label define each node's position,
and ``edge_index(etype)`` gives a ``2 x E`` numpy array of positions (PyG's ``edge_index``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import neo4j

from fraudgraph.graph import model as m

EdgeType = tuple[str, str, str]  # (source label, relationship type, target label)

FRAUD_LABEL_PROPS = (m.FRAUD_REPORT_ID, m.FRAUD_REPORT_KIND, m.FRAUD_REPORTED_AT)


def edge_types() -> list[EdgeType]:
    """Every (source label, relationship, target label) the model writes."""
    out: list[EdgeType] = []
    for label, links in m.NODE_LINKS.items():
        for link in links:
            out.append((label, link.rel, link.other.label) if link.outgoing else (link.other.label, link.rel, label))
    for fact in m.FACT_TYPES:
        for e in fact.edges:
            out.append((e.source.label, e.rel, e.target.label))
            if e.self_if_missing:
                out.append((e.source.label, e.rel, e.source.label))
    return list(dict.fromkeys(out))


@dataclass
class Subgraph:
    until_ms: int | None
    node_keys: dict[str, list[Any]] = field(default_factory=dict)  # label -> keys, sorted
    node_props: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # aligned with node_keys
    edges: dict[EdgeType, list[tuple[Any, Any]]] = field(default_factory=dict)  # (src key, dst key)
    edge_props: dict[EdgeType, list[dict[str, Any]]] = field(default_factory=dict)  # aligned with edges

    def num_nodes(self, label: str) -> int:
        return len(self.node_keys.get(label, ()))

    def edge_index(self, etype: EdgeType):
        """``2 x E`` int64 numpy array of node positions for one edge type."""
        import numpy as np

        src_label, _, dst_label = etype
        src_pos = {k: i for i, k in enumerate(self.node_keys.get(src_label, ()))}
        dst_pos = {k: i for i, k in enumerate(self.node_keys.get(dst_label, ()))}
        pairs = self.edges.get(etype, [])
        out = np.empty((2, len(pairs)), dtype=np.int64)
        for j, (s, d) in enumerate(pairs):
            out[0, j], out[1, j] = src_pos[s], dst_pos[d]
        return out


def _key_order(key: Any) -> tuple[bool, Any]:
    """A total order over entity keys, which may mix integers and text: numbers first."""
    return (isinstance(key, str), key)


def _visible(var: str) -> str:
    return f"coalesce({var}.{m.DELETED}, false) = false AND ($until IS NULL OR {var}.{m.FIRST_TS_MS} <= $until)"


def _clean_node(props: dict[str, Any], key: str, until_ms: int | None) -> dict[str, Any]:
    report_ts = props.get(m.FRAUD_REPORT_TS_MS)
    label_visible = props.get(m.FRAUD_REPORT_DELETED) is False and (
        until_ms is None or (report_ts is not None and report_ts <= until_ms)
    )
    out = {}
    for name, value in props.items():
        if name == key or name in m.BOOKKEEPING or (name in m.FRAUD_REPORT_PROPS and name not in FRAUD_LABEL_PROPS):
            continue
        if name in FRAUD_LABEL_PROPS and not label_visible:
            continue
        out[name] = value
    return out


def export_subgraph(
    driver: neo4j.Driver,
    *,
    until_ms: int | None = None,
    database: str | None = None,
    labels: tuple[str, ...] | None = None,
) -> Subgraph:
    """Nodes and edges visible at source time ``until_ms`` (None: now). ``labels`` restricts the
    node labels (edges are kept only between exported labels)."""
    wanted = {n.label for n in m.NODE_TYPES} if labels is None else set(labels)
    with driver.session(database=database, default_access_mode=neo4j.READ_ACCESS) as session:
        return _export(session, wanted, until_ms)


def _export(session: neo4j.Session, wanted: set[str], until_ms: int | None) -> Subgraph:
    sub = Subgraph(until_ms)
    for node in m.NODE_TYPES:
        if node.label not in wanted:
            continue
        result = session.run(
            f"MATCH (n:{node.label}) WHERE {_visible('n')} RETURN n.{node.key} AS key, properties(n) AS props",
            until=until_ms,
        )
        records = sorted((r.data() for r in result), key=lambda r: _key_order(r["key"]))
        sub.node_keys[node.label] = [r["key"] for r in records]
        sub.node_props[node.label] = [_clean_node(r["props"], node.key, until_ms) for r in records]
    keys = {n.label: n.key for n in m.NODE_TYPES}
    for etype in edge_types():
        src, rel, dst = etype
        if src not in wanted or dst not in wanted:
            continue
        result = session.run(
            f"MATCH (a:{src})-[r:{rel}]->(b:{dst}) WHERE {_visible('r')} AND {_visible('a')} AND {_visible('b')} "
            f"RETURN a.{keys[src]} AS src, b.{keys[dst]} AS dst, properties(r) AS props",
            until=until_ms,
        )
        records = sorted((r.data() for r in result), key=lambda r: (_key_order(r["src"]), _key_order(r["dst"])))
        sub.edges[etype] = [(r["src"], r["dst"]) for r in records]
        sub.edge_props[etype] = [{k: v for k, v in r["props"].items() if k not in m.BOOKKEEPING} for r in records]
    return sub
