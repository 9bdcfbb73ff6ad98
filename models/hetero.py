"""Typed relations and a small full-graph container for the heterogeneous R-GCN.

Why relations carry their endpoint types: exact incremental scoring projects a *mean of raw
neighbour features* through one node type's input projection, which is only valid when every
neighbour under a relation has that one type. ``(Transaction, PAYS, Merchant)`` and a
hypothetical ``(Transaction, PAYS, Account)`` are therefore two relations, never one.

Every edge type of ``graph/model.py`` is used in both directions (``rev_<NAME>`` for the inverse):
a transaction learns from its merchant and the merchant from its transactions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Relation:
    """Messages flow from a ``src``-typed node to a ``dst``-typed node. ``key`` names the relation
    in per-node state (``NeighbourSums`` of the ``dst`` node)."""

    src: str
    name: str
    dst: str

    @property
    def key(self) -> str:
        return f"{self.src}:{self.name}:{self.dst}"

    def inverse(self) -> Relation:
        name = self.name[4:] if self.name.startswith("rev_") else f"rev_{self.name}"
        return Relation(self.dst, name, self.src)


def with_inverses(relations: Sequence[Relation]) -> list[Relation]:
    """Each relation followed by its inverse (r, rev_r, s, rev_s, ...)."""
    return [r2 for r in relations for r2 in (r, r.inverse())]


# The graph writer's schema (graph/model.py), as typed relations. Kept here as plain data rather
# than imported so the model does not depend on the writer's module while both are being built.
FRAUD_NODE_TYPES = ("Customer", "Account", "Merchant", "Device", "IP", "Transaction")
FRAUD_RELATIONS = with_inverses(
    [
        Relation("Customer", "OWNS", "Account"),
        Relation("Account", "INITIATED", "Transaction"),
        Relation("Transaction", "PAYS", "Merchant"),
        Relation("Transaction", "TRANSFER_TO", "Account"),
        Relation("Transaction", "USING_DEVICE", "Device"),
        Relation("Transaction", "FROM_IP", "IP"),
        Relation("Customer", "LOGGED_IN", "Device"),
        Relation("Customer", "LOGIN_FROM", "IP"),
    ]
)


@dataclass
class HeteroGraph:
    """A whole typed graph: ``x[t]`` is (n_t, width_t); global node ids run through ``node_types``
    in order; ``edge_index[:, e]`` = (sender, receiver) of relation ``relations[edge_type[e]]``."""

    node_types: list[str]
    relations: list[Relation]
    x: dict[str, Tensor]
    edge_index: Tensor
    edge_type: Tensor

    @property
    def offsets(self) -> dict[str, int]:
        out, acc = {}, 0
        for t in self.node_types:
            out[t] = acc
            acc += self.x[t].size(0)
        return out

    @property
    def num_nodes(self) -> int:
        return sum(self.x[t].size(0) for t in self.node_types)

    def node_type_of(self, node: int) -> str:
        for t, off in reversed(list(self.offsets.items())):
            if node >= off:
                return t
        raise IndexError(node)

    def features(self, node: int) -> Tensor:
        t = self.node_type_of(node)
        return self.x[t][node - self.offsets[t]]

    def validate(self) -> None:
        """Every edge joins the node types its relation names (the incremental maths relies on it)."""
        types = torch.cat([torch.full((self.x[t].size(0),), i) for i, t in enumerate(self.node_types)])
        idx = {t: i for i, t in enumerate(self.node_types)}
        want_src = torch.tensor([idx[r.src] for r in self.relations])[self.edge_type]
        want_dst = torch.tensor([idx[r.dst] for r in self.relations])[self.edge_type]
        if not (
            bool((types[self.edge_index[0]] == want_src).all()) and bool((types[self.edge_index[1]] == want_dst).all())
        ):
            raise ValueError("an edge joins node types its relation does not name")

    def to(self, device: str | torch.device) -> HeteroGraph:
        return HeteroGraph(
            self.node_types,
            self.relations,
            {t: v.to(device) for t, v in self.x.items()},
            self.edge_index.to(device),
            self.edge_type.to(device),
        )


def build_graph(
    x: Mapping[str, Tensor],
    relations: Sequence[Relation],
    edges: Sequence[tuple[Relation, int, int]],
    add_inverses: bool = True,
) -> HeteroGraph:
    """A graph from per-type features and (relation, local src index, local dst index) triples;
    with ``add_inverses`` each edge is added in reverse under ``relation.inverse()`` too."""
    node_types = list(x)
    g = HeteroGraph(
        node_types, list(relations), dict(x), torch.empty(2, 0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    )
    off, index = g.offsets, {r: i for i, r in enumerate(relations)}
    cols, types = [], []
    for rel, s, d in edges:
        cols.append((off[rel.src] + s, off[rel.dst] + d))
        types.append(index[rel])
        if add_inverses:
            cols.append((off[rel.dst] + d, off[rel.src] + s))
            types.append(index[rel.inverse()])
    if cols:
        g.edge_index = torch.tensor(cols, dtype=torch.long).t().contiguous()
        g.edge_type = torch.tensor(types, dtype=torch.long)
    return g


def random_fraud_graph(
    num_transactions: int, seed: int, widths: Mapping[str, int] | None = None, num_customers: int | None = None
) -> HeteroGraph:
    """A random graph in the fraud schema, for tests: every transaction has an account, a device,
    an IP and either a merchant or a counterparty account; customers own accounts and log in.
    Some nodes end up without neighbours under some relations (and some with parallel edges),
    which is exactly what the zero-count and multiplicity paths need exercised."""
    gen = torch.Generator().manual_seed(seed)
    widths = dict(widths or {"Customer": 5, "Account": 7, "Merchant": 4, "Device": 3, "IP": 2, "Transaction": 9})
    c = num_customers or max(2, num_transactions // 4)
    counts = {
        "Customer": c,
        "Account": c + 1,
        "Merchant": max(1, num_transactions // 5),
        "Device": max(1, c // 2 + 1),
        "IP": max(1, c // 2 + 2),
        "Transaction": num_transactions,
    }
    x = {t: torch.randn(counts[t], widths[t], generator=gen) for t in FRAUD_NODE_TYPES}

    def pick(t: str) -> int:
        return int(torch.randint(counts[t], (1,), generator=gen))

    R = {(r.src, r.name): r for r in FRAUD_RELATIONS}
    edges = []
    for a in range(counts["Account"] - 1):  # the last account has no owner: a zero-count relation
        edges.append((R["Customer", "OWNS"], pick("Customer"), a))
    for tx in range(num_transactions):
        edges.append((R["Account", "INITIATED"], pick("Account"), tx))
        if float(torch.rand(1, generator=gen)) < 0.7:
            edges.append((R["Transaction", "PAYS"], tx, pick("Merchant")))
        else:
            edges.append((R["Transaction", "TRANSFER_TO"], tx, pick("Account")))
        edges.append((R["Transaction", "USING_DEVICE"], tx, pick("Device")))
        edges.append((R["Transaction", "FROM_IP"], tx, pick("IP")))
    for _ in range(2 * c):
        edges.append((R["Customer", "LOGGED_IN"], pick("Customer"), pick("Device")))
        edges.append((R["Customer", "LOGIN_FROM"], pick("Customer"), pick("IP")))
    g = build_graph(x, FRAUD_RELATIONS, edges)
    g.validate()
    return g
