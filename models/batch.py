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
  features with a 0/1 "has neighbours" flag and ``log(1 + count)``, its degree so far (a mean
  hides how many neighbours there are: a fan-in of fifty looks like a single payer). Neighbours
  are not deduplicated across targets; a node's row is a few floats, and two targets may
  legitimately see one account at two versions.
* ``forward`` (device): layer 1 for every encoded node, grouped by node type (one projection and a
  few matmuls per type), then layer 2 for the targets with one ``index_add_`` over the
  target<-neighbour edges. It also returns each relation's additive share of the logit, which is
  what the decision's "why" reports (for a transaction each relation has at most one neighbour: its
  account, merchant or counterparty, device, IP).
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import log1p
from typing import Any, Protocol

import torch
from torch import Tensor

from fraudgraph.models.hetero import Relation


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


class GraphSchema(Protocol):
    """What ``encode`` needs of a model: its node types (in numbering order), typed relations and
    raw feature widths."""

    node_types: list[str]
    relations: list[Relation]
    feature_widths: dict[str, int]


@dataclass
class EncodedBatch:
    """``x[t]``: (n_t, width_t) raw features; ``means[r]``/``has[r]``: per relation r into type
    dst(r), the neighbours' mean raw features (n_dst, width_src) and a (n_dst,) 0/1 flag;
    ``degree[r]``: (n_dst,) log(1 + number of neighbours under r); nodes are
    numbered globally type block after type block (``model.node_types`` order); ``targets`` (B,)
    are global numbers; edges ``edge_target`` (batch position) <- ``edge_node`` (global) under
    ``edge_relation``, weighted ``edge_norm`` = 1/count."""

    x: dict[str, Tensor]
    means: dict[int, Tensor]
    has: dict[int, Tensor]
    degree: dict[int, Tensor]
    targets: Tensor
    edge_target: Tensor
    edge_node: Tensor
    edge_relation: Tensor
    edge_norm: Tensor

    @property
    def size(self) -> int:
        return int(self.targets.numel())

    def to(self, device: torch.device | str, dtype: torch.dtype = torch.float32) -> EncodedBatch:
        f = lambda t: t.to(device=device, dtype=dtype, non_blocking=True)
        i = lambda t: t.to(device=device, non_blocking=True)
        return EncodedBatch(
            {k: f(v) for k, v in self.x.items()},
            {k: f(v) for k, v in self.means.items()},
            {k: f(v) for k, v in self.has.items()},
            {k: f(v) for k, v in self.degree.items()},
            i(self.targets),
            i(self.edge_target),
            i(self.edge_node),
            i(self.edge_relation),
            f(self.edge_norm),
        )


def encode(requests: Sequence[ScoringRequest], model: GraphSchema) -> EncodedBatch:
    """Host-side tensors for ``forward``. Raises ``ValueError`` on state that cannot be exact:
    a wrong feature width, an unknown relation, or neighbour lists that disagree with the
    target's counts (a stale or missing neighbour state).

    Kept lean because it is Python per node (the host-side cost of a large batch): values go
    into flat ``array``s (``torch.tensor`` on nested lists costs more than all the rest), all
    float64 ones and all int64 ones are then joined and become two tensors (``torch.frombuffer``)
    that every field is a view of, so a batch of one pays for a few tensor operations, not one per
    field; means are ``v / n`` per value, the division skipped where ``n`` is 1 (exact either way);
    edges keep (type, local row) and are numbered globally at the end. None of this changes a
    value: the batch is bit-for-bit the one nested lists and ``torch.tensor`` would give."""
    widths = model.feature_widths
    types = list(model.node_types)
    type_index = {t: i for i, t in enumerate(types)}
    # per node type: (relation index, key, zero row, source width) of each relation into it
    incoming: dict[str, list[tuple[int, str, list[float], int]]] = {t: [] for t in types}
    into: dict[str, dict[str, tuple[int, str]]] = {t: {} for t in types}
    for r, rel in enumerate(model.relations):
        key = rel.key
        incoming[rel.dst].append((r, key, [0.0] * widths[rel.src], widths[rel.src]))
        into[rel.dst][key] = (r, rel.src)
    n_rel = len(model.relations)
    rows = {t: array("d") for t in types}
    count = dict.fromkeys(types, 0)
    means = [array("d") for _ in range(n_rel)]
    has = [array("d") for _ in range(n_rel)]
    degree = [array("d") for _ in range(n_rel)]

    def add(state: StateView) -> tuple[str, int]:
        t = state.node_type
        if t not in rows:
            raise ValueError(f"the model has no node type {t!r}")
        features = state.features
        if len(features) != widths[t]:
            raise ValueError(f"{t} state has {len(features)} features, the model expects {widths[t]}")
        rows[t].extend(features)
        local = count[t]
        count[t] = local + 1
        state_counts, state_sums = state.neighbours.counts, state.neighbours.sums
        for r, key, zero, width in incoming[t]:
            n = state_counts.get(key, 0)
            if n:
                acc = state_sums[key]
                if len(acc) != width:
                    raise ValueError(f"{t} state's {key} sums have {len(acc)} values, the model expects {width}")
                means[r].extend(acc if n == 1 else [v / n for v in acc])
                has[r].append(1.0)
                degree[r].append(log1p(n))
            else:
                means[r].extend(zero)
                has[r].append(0.0)
                degree[r].append(0.0)
        return t, local

    target_type, target_local = array("q"), array("q")
    edge_target, edge_type, edge_local, edge_relation = array("q"), array("q"), array("q"), array("q")
    edge_norm = array("d")
    for b, req in enumerate(requests):
        target = req.target
        t, local = add(target)
        target_type.append(type_index[t])
        target_local.append(local)
        index, neighbours = into[t], req.neighbours
        if any(key not in index for key in neighbours):
            raise ValueError(f"no relation into {t} named {sorted(set(neighbours) - set(index))}")
        target_counts = target.neighbours.counts
        for r, key, _, _ in incoming[t]:
            states = neighbours.get(key, ())
            want = target_counts.get(key, 0)
            if len(states) != want:
                raise ValueError(
                    f"{key}: {len(states)} neighbour states but the target's sums count {want} (stale or missing state)"
                )
            src = index[key][1]
            for s in states:
                if s.node_type != src:
                    raise ValueError(f"{key}: neighbour of type {s.node_type}")
                st, sl = add(s)
                edge_target.append(b)
                edge_type.append(type_index[st])
                edge_local.append(sl)
                edge_relation.append(r)
                edge_norm.append(1.0 / want)

    offsets, acc = array("q"), 0
    for t in types:
        offsets.append(acc)
        acc += count[t]
    floats = _views([*(rows[t] for t in types), *means, *has, *degree, edge_norm], torch.float64)
    ints = _views([offsets, target_type, target_local, edge_target, edge_type, edge_local, edge_relation], torch.long)
    x = {t: floats[i].view(-1, widths[t]) for i, t in enumerate(types)}
    k = len(types)
    src_width = [widths[rel.src] for rel in model.relations]
    offsets_t, target_type_t, target_local_t, edge_target_t, edge_type_t, edge_local_t, edge_relation_t = ints
    return EncodedBatch(
        x=x,
        means={r: floats[k + r].view(-1, src_width[r]) for r in range(n_rel)},
        has={r: floats[k + n_rel + r] for r in range(n_rel)},
        degree={r: floats[k + 2 * n_rel + r] for r in range(n_rel)},
        targets=offsets_t[target_type_t] + target_local_t,
        edge_target=edge_target_t,
        edge_node=offsets_t[edge_type_t] + edge_local_t,
        edge_relation=edge_relation_t,
        edge_norm=floats[k + 3 * n_rel],
    )


def _views(parts: list[array], dtype: torch.dtype) -> tuple[Tensor, ...]:
    """The flat arrays as 1-D tensors: one buffer, one tensor, one split (views of it)."""
    joined = array(parts[0].typecode)
    for part in parts:
        joined.extend(part)
    if not len(joined):
        return tuple(torch.zeros(0, dtype=dtype) for _ in parts)
    return torch.frombuffer(joined, dtype=dtype).split([len(part) for part in parts])
