"""Many targets at once: the incremental R-GCN of ``models/incremental.py`` as a handful of tensor
operations, so a batch of transactions costs about as much as one on a GPU.

Why this is the one forward pass for serving *and* training: ``forward`` reads the model's own
parameters (no detached copies), so the same function gives gradients offline and scores online.
A model is therefore trained on exactly the arithmetic that will score it: state -> per-relation
neighbour means -> projection -> two R-GCN layers, with no full-graph forward in between that
could differ in a detail (normalisation, missing relations, parallel edges).

Two steps, so the host work and the device work can be timed and placed separately:

* ``encode`` (host, Python): the states of each target and its direct neighbours become padded
  tensors: every node's raw features, and, per relation into it, the mean of its neighbours' raw
  features with a 0/1 "has neighbours" flag. Neighbours are not deduplicated across targets; a
  node's row is a few floats, and two targets may legitimately see one account at two versions.
* ``forward`` (device): layer 1 for every encoded node, grouped by node type (one projection and a
  few matmuls per type), then layer 2 for the targets with one ``index_add_`` over the
  target<-neighbour edges. It also returns each relation's additive share of the logit, which is
  what the decision's "why" reports (for a transaction each relation has at most one neighbour: its
  account, merchant or counterparty, device, IP).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence

import torch
from torch import Tensor

from fraudgraph.models.hetero import Relation
from fraudgraph.models.rgcn import HeteroRGCN


class StateView(Protocol):
    """What a node state must offer (``models.incremental.NodeState`` and the worker's
    ``streams.state.NodeState`` both do)."""

    node_type: str
    features: list[float]
    neighbours: Any  # NeighbourSums: .counts[key] -> int, .sums[key] -> list[float]


@dataclass
class ScoringRequest:
    """One target and, per relation key into it, the states of its senders (as many as the
    target's own count for that relation says)."""

    target: StateView
    neighbours: Mapping[str, Sequence[StateView]]


@dataclass
class EncodedBatch:
    """``x[t]``: (n_t, width_t) raw features; ``means[r]``/``has[r]``: per relation r into type
    dst(r), the neighbours' mean raw features (n_dst, width_src) and a (n_dst,) 0/1 flag; nodes are
    numbered globally type block after type block (``model.node_types`` order); ``targets`` (B,)
    are global numbers; edges ``edge_target`` (batch position) <- ``edge_node`` (global) under
    ``edge_relation``, weighted ``edge_norm`` = 1/count."""

    x: dict[str, Tensor]
    means: dict[int, Tensor]
    has: dict[int, Tensor]
    targets: Tensor
    edge_target: Tensor
    edge_node: Tensor
    edge_relation: Tensor
    edge_norm: Tensor

    @property
    def size(self) -> int:
        return int(self.targets.numel())

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> "EncodedBatch":
        f = lambda t: t.to(device=device, dtype=dtype, non_blocking=True)  # noqa: E731
        i = lambda t: t.to(device=device, non_blocking=True)  # noqa: E731
        return EncodedBatch({k: f(v) for k, v in self.x.items()}, {k: f(v) for k, v in self.means.items()},
                            {k: f(v) for k, v in self.has.items()}, i(self.targets), i(self.edge_target),
                            i(self.edge_node), i(self.edge_relation), f(self.edge_norm))


def _incoming(model: HeteroRGCN) -> dict[str, list[tuple[int, Relation]]]:
    out: dict[str, list[tuple[int, Relation]]] = {t: [] for t in model.node_types}
    for i, rel in enumerate(model.relations):
        out[rel.dst].append((i, rel))
    return out


def encode(requests: Sequence[ScoringRequest], model: HeteroRGCN) -> EncodedBatch:
    """Host-side tensors for ``forward``. Raises ``ValueError`` on state that cannot be exact:
    a wrong feature width, an unknown relation, or neighbour lists that disagree with the
    target's counts (a stale or missing neighbour state)."""
    widths, incoming = model.feature_widths, _incoming(model)
    rows: dict[str, list[list[float]]] = {t: [] for t in model.node_types}
    means: dict[int, list[list[float]]] = {i: [] for i in range(len(model.relations))}
    has: dict[int, list[float]] = {i: [] for i in range(len(model.relations))}
    zeros = {t: [0.0] * w for t, w in widths.items()}

    def add(state: StateView) -> tuple[str, int]:
        t = state.node_type
        if t not in rows:
            raise ValueError(f"the model has no node type {t!r}")
        if len(state.features) != widths[t]:
            raise ValueError(f"{t} state has {len(state.features)} features, the model expects {widths[t]}")
        local = len(rows[t])
        rows[t].append(state.features)
        counts, sums = state.neighbours.counts, state.neighbours.sums
        for r, rel in incoming[t]:
            n = counts.get(rel.key, 0)
            means[r].append([v / n for v in sums[rel.key]] if n else zeros[rel.src])
            has[r].append(1.0 if n else 0.0)
        return t, local

    targets, edges = [], []
    for b, req in enumerate(requests):
        targets.append(add(req.target))
        t = req.target.node_type
        index = {rel.key: (r, rel) for r, rel in incoming[t]}
        if unknown := set(req.neighbours) - set(index):
            raise ValueError(f"no relation into {t} named {sorted(unknown)}")
        for key, (r, rel) in index.items():
            states = req.neighbours.get(key, ())
            want = req.target.neighbours.counts.get(key, 0)
            if len(states) != want:
                raise ValueError(f"{key}: {len(states)} neighbour states but the target's sums count {want} "
                                 "(stale or missing state)")
            for s in states:
                if s.node_type != rel.src:
                    raise ValueError(f"{key}: neighbour of type {s.node_type}")
                edges.append((b, add(s), r, 1.0 / want))

    offsets, acc = {}, 0
    for t in model.node_types:
        offsets[t], acc = acc, acc + len(rows[t])
    glob = lambda tl: offsets[tl[0]] + tl[1]  # noqa: E731

    def mat(values: list[list[float]], width: int) -> Tensor:
        return torch.tensor(values, dtype=torch.float64) if values else torch.zeros(0, width, dtype=torch.float64)

    src_width = {r: widths[rel.src] for r, rel in enumerate(model.relations)}
    return EncodedBatch(
        x={t: mat(rows[t], widths[t]) for t in model.node_types},
        means={r: mat(v, src_width[r]) for r, v in means.items()},
        has={r: torch.tensor(v, dtype=torch.float64) for r, v in has.items()},
        targets=torch.tensor([glob(t) for t in targets], dtype=torch.long),
        edge_target=torch.tensor([e[0] for e in edges], dtype=torch.long),
        edge_node=torch.tensor([glob(e[1]) for e in edges], dtype=torch.long),
        edge_relation=torch.tensor([e[2] for e in edges], dtype=torch.long),
        edge_norm=torch.tensor([e[3] for e in edges], dtype=torch.float64),
    )


def forward(model: HeteroRGCN, batch: EncodedBatch) -> tuple[Tensor, Tensor]:
    """Logits (B, out) of the targets and each relation's additive share of them (B, R, out); the
    logits are ``self + bias + shares.sum(1)``. ``batch`` must be on the model's device and dtype."""
    incoming = _incoming(model)
    w1, w2 = model.conv1.relation_weights(), model.conv2.relation_weights()
    blocks = []
    for t in model.node_types:
        x = batch.x[t]
        if x.size(0) == 0:
            blocks.append(x.new_zeros(0, model.hidden))
            continue
        z = model.project[t](x) @ model.conv1.root
        for r, rel in incoming[t]:
            # Project the mean, then zero rows without neighbours: a relation with no neighbours
            # contributes nothing, the projection's bias included.
            mean = model.project[rel.src](batch.means[r]) * batch.has[r].unsqueeze(1)
            z = z + mean @ w1[r]
        if model.conv1.bias is not None:
            z = z + model.conv1.bias
        blocks.append(torch.relu(z))
    h1 = torch.cat(blocks)
    B, R, H = batch.size, len(model.relations), model.hidden
    msg = h1[batch.edge_node] * batch.edge_norm.unsqueeze(1)
    agg = h1.new_zeros(B * R, H).index_add_(0, batch.edge_target * R + batch.edge_relation, msg)
    shares = torch.einsum("brh,rho->bro", agg.view(B, R, H), w2)
    logits = h1[batch.targets] @ model.conv2.root + shares.sum(1)
    if model.conv2.bias is not None:
        logits = logits + model.conv2.bias
    return logits, shares
