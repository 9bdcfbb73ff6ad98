"""R-GCN (Schlichtkrull et al., 2018) in plain torch: one layer, a 2-layer model, and a
heterogeneous variant with one input projection per node type.

Why our own instead of ``torch_geometric.nn.RGCNConv``: the worker scores transactions one at a
time from per-node running sums (``models/incremental.py``), which re-implements this exact
arithmetic outside any graph library. Owning the layer keeps that arithmetic in one readable
place, with the same parameter names and shapes as PyG (``weight``, ``comp``, ``root``, ``bias``)
so a test can copy weights across and prove both compute the same function.

One layer, for node v (edges point from message sender u to receiver v)::

    h'(v) = h(v) @ root + sum_r mean_{u in N_r(v)} h(u) @ W_r + bias

with ``W_r = sum_b comp[r, b] * weight[b]`` under basis decomposition (``num_bases``), which
shares parameters across relations so rare relations still get a usable weight. A relation a
node has no neighbours under contributes nothing (not a zero-count division).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from fraudgraph.models.batch import EncodedBatch
from fraudgraph.models.hetero import Relation


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"cuda"`` on a machine without CUDA is an error rather than a silent fall back to CPU, so
    a benchmark never reports CPU numbers under a CUDA label."""
    device = torch.device(device or "cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    return device


def mean_norm(edge_index: Tensor, edge_type: Tensor, num_nodes: int, num_relations: int, dtype: torch.dtype) -> Tensor:
    """1 / |N_r(v)| for every edge (u -> v, r): the weight that turns a per-relation sum into a mean.

    Counted per (receiver, relation) pair with one bincount, so the mean is over that relation's
    neighbours only, as in the paper (and PyG's ``aggr="mean"``), not over all neighbours.
    Parallel edges count as many times as they occur, like a running count does.
    """
    key = edge_index[1] * num_relations + edge_type
    counts = torch.bincount(key, minlength=num_nodes * num_relations)
    return counts[key].to(dtype).reciprocal()


class RGCNLayer(nn.Module):
    """One mean-aggregating R-GCN layer with a self-loop (``root``) weight and a bias.

    ``in_channels`` may be the number of nodes with ``x=None``: featureless input, each node a
    one-hot vector, so ``x @ W`` is a row lookup (the paper's setting for AIFB; no N x N matrix).
    """

    #: above this many elements (N * relations * in_channels) the per-relation means are built one
    #: relation at a time instead of all at once (2**26 float32 = 256 MiB)
    dense_limit = 2**26

    def __init__(
        self, in_channels: int, out_channels: int, num_relations: int, num_bases: int | None = None, bias: bool = True
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.num_relations, self.num_bases = num_relations, num_bases
        if num_bases is not None:
            self.weight = nn.Parameter(torch.empty(num_bases, in_channels, out_channels))
            self.comp = nn.Parameter(torch.empty(num_relations, num_bases))
        else:
            self.weight = nn.Parameter(torch.empty(num_relations, in_channels, out_channels))
            self.register_parameter("comp", None)
        self.root = nn.Parameter(torch.empty(in_channels, out_channels))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Glorot on each (in, out) slice, as PyG does, so training behaves like the reference.
        for p in (self.weight, self.root):
            bound = (6.0 / (p.size(-2) + p.size(-1))) ** 0.5
            nn.init.uniform_(p, -bound, bound)
        if self.comp is not None:
            bound = (6.0 / (self.comp.size(-2) + self.comp.size(-1))) ** 0.5
            nn.init.uniform_(self.comp, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def relation_weights(self, dtype: torch.dtype | None = None) -> Tensor:
        """W_r for every relation, (num_relations, in, out), composed from the bases if any.
        With ``dtype``, the bases are cast *before* composing (a float64 scorer gets float64 W_r,
        not float32 products widened afterwards)."""
        weight: Tensor = self.weight
        comp: Tensor | None = self.comp
        if dtype is not None:
            weight, comp = weight.to(dtype), (comp.to(dtype) if comp is not None else None)
        if comp is None:
            return weight
        return (comp @ weight.flatten(1)).reshape(  # (bases, in * out)
            self.num_relations, self.in_channels, self.out_channels
        )

    def forward(self, x: Tensor | None, edge_index: Tensor, edge_type: Tensor, num_nodes: int | None = None) -> Tensor:
        weight = self.relation_weights()
        src, dst = edge_index
        if x is None:  # featureless: node u's input is one-hot(u), so u @ W_r is row u of W_r
            n = num_nodes if num_nodes is not None else self.in_channels
            norm = mean_norm(edge_index, edge_type, n, self.num_relations, weight.dtype)
            msg = weight.reshape(-1, self.out_channels)[edge_type * self.in_channels + src] * norm.unsqueeze(1)
            out = torch.zeros(n, self.out_channels, dtype=weight.dtype, device=weight.device).index_add_(0, dst, msg)
            out = out + self.root[:n]
        else:
            n, R = x.size(0), self.num_relations
            norm = mean_norm(edge_index, edge_type, n, R, x.dtype)
            out = x @ self.root
            # Aggregate first, transform after: mean_r(x) @ W_r costs N*F*O per relation instead
            # of E*F*O. Small enough: all relations' means at once, (N, R*F) @ (R*F, O), one
            # kernel (a per-relation loop is ~90 launches and host syncs on AIFB). Larger: loop, so
            # memory stays O(N*F) whatever the number of relations.
            msg = x[src] * norm.unsqueeze(1)
            if n * R * x.size(1) <= self.dense_limit:
                agg = torch.zeros(n * R, x.size(1), dtype=x.dtype, device=x.device).index_add_(
                    0, dst * R + edge_type, msg
                )
                out = out + agg.view(n, R * x.size(1)) @ weight.reshape(R * x.size(1), self.out_channels)
            else:
                for r in range(R):
                    mask = edge_type == r
                    agg = torch.zeros_like(x).index_add_(0, dst[mask], msg[mask])
                    out = out + agg @ weight[r]
        if self.bias is not None:
            out = out + self.bias
        return out


class RGCN(nn.Module):
    """The paper's 2-layer entity classifier: R-GCN -> ReLU -> (dropout) -> R-GCN, logits out.

    ``in_channels=None`` means featureless nodes (``num_nodes`` one-hot inputs), as for AIFB.

    ``layer_norm=True`` puts a ``LayerNorm`` on the first layer's output, before the ReLU. Why: on
    YelpChi the first layer adds a node's own term to three relation means built over very
    different neighbourhoods (a user's few other reviews, a product's hundreds of same-rating
    ones); normalising each node's hidden vector made full-batch training steadier and better
    (validation AUC 0.819 -> 0.821 at otherwise equal settings). It acts on one node's h1 only, so
    h1 stays a function of the node's own features and neighbour means, which is what the
    incremental scheme (``incremental.py``, for ``HeteroRGCN``, which does not use it) relies on.
    Off by default: the paper's model, and what AIFB uses.
    """

    def __init__(
        self,
        in_channels: int | None,
        hidden: int,
        out_channels: int,
        num_relations: int,
        num_nodes: int | None = None,
        num_bases: int | None = None,
        dropout: float = 0.0,
        layer_norm: bool = False,
    ):
        super().__init__()
        first_width = num_nodes if in_channels is None else in_channels  # featureless: a one-hot per node
        if first_width is None:
            raise ValueError("featureless input (in_channels=None) needs num_nodes")
        self.featureless = in_channels is None
        self.num_nodes = num_nodes
        self.conv1 = RGCNLayer(first_width, hidden, num_relations, num_bases)
        self.norm1 = nn.LayerNorm(hidden) if layer_norm else None
        self.conv2 = RGCNLayer(hidden, out_channels, num_relations, num_bases)
        self.dropout = dropout

    def hidden_activation(self, h: Tensor) -> Tensor:
        """ReLU of the first layer's output (after the optional LayerNorm): h1 of every node."""
        return torch.relu(self.norm1(h) if self.norm1 is not None else h)

    def forward(self, x: Tensor | None, edge_index: Tensor, edge_type: Tensor) -> Tensor:
        h = self.hidden_activation(self.conv1(x, edge_index, edge_type, num_nodes=self.num_nodes))
        h = nn.functional.dropout(h, self.dropout, self.training)
        return self.conv2(h, edge_index, edge_type)


class HeteroRGCN(nn.Module):
    """2-layer R-GCN over typed nodes: an input projection per node type, then two R-GCN layers.

    Why a projection per type: transactions, accounts, merchants, devices and IPs carry different
    raw features (amount and time for one, balance and age for another, a handful or none for an
    IP), so there is no shared input width. ``Linear(width_t, hidden)`` per type maps each into one
    common width the relation weights can act on.

    Why the projection is affine with *no* activation after it: incremental scoring keeps only
    per-relation sums of neighbours' raw features, and mean_u P(x_u) = P(mean_u x_u) holds only if
    P is affine and every neighbour under the relation has the same type (hence the same P). The
    relations are therefore typed (``Relation(src, name, dst)``), and the nonlinearity comes after
    the first R-GCN layer. A nonlinearity here would make the state depend on the model weights.

    Why degree inputs (``degree_inputs``): a mean over a relation's neighbours says nothing of how
    many there are, and where features carry no signal (every AMLSim row is a "transfer" on a
    whole day) the shape of the graph is all there is: a fan-in of fifty senders looks like one.
    The first layer therefore also adds ``log(1 + |N_r(v)|) * degree[r]`` per relation r into v.
    The count is one the node's state keeps exactly (``NeighbourSums.counts``), so incremental
    scoring stays exact. Models saved before it have no ``degree`` (their architecture says so).

    Nodes are numbered globally in ``node_types`` order: all nodes of the first type, then the
    second, ... (PyG's ``to_homogeneous`` convention); ``x`` maps each type to its (n_t, width_t)
    raw features.
    """

    kind: ClassVar[str] = "rgcn"  # its name in a model card (models/interface.py)

    def __init__(
        self,
        feature_widths: Mapping[str, int],
        relations: Sequence[Relation],
        hidden: int,
        out_channels: int,
        num_bases: int | None = None,
        degree_inputs: bool = True,
    ):
        super().__init__()
        self.node_types = list(feature_widths)
        self.feature_widths = dict(feature_widths)
        self.relations = list(relations)
        for rel in self.relations:
            if rel.src not in self.feature_widths or rel.dst not in self.feature_widths:
                raise ValueError(f"relation {rel.key} names an unknown node type")
        self.relation_index = {rel.key: i for i, rel in enumerate(self.relations)}
        self.hidden = hidden
        self.project = nn.ModuleDict({t: nn.Linear(w, hidden) for t, w in self.feature_widths.items()})
        self.conv1 = RGCNLayer(hidden, hidden, len(self.relations), num_bases)
        self.conv2 = RGCNLayer(hidden, out_channels, len(self.relations), num_bases)
        # Zero at the start: an untrained degree term leaves the model the plain R-GCN.
        self.degree = nn.Parameter(torch.zeros(len(self.relations), hidden)) if degree_inputs else None

    def embed(self, x: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([self.project[t](x[t]) for t in self.node_types], dim=0)

    def hidden_states(self, x: Mapping[str, Tensor], edge_index: Tensor, edge_type: Tensor) -> Tensor:
        z = self.conv1(self.embed(x), edge_index, edge_type)
        if self.degree is not None:
            R = len(self.relations)
            counts = torch.bincount(edge_index[1] * R + edge_type, minlength=z.size(0) * R).view(-1, R)
            z = z + torch.log1p(counts.to(z.dtype)) @ self.degree
        return torch.relu(z)

    def forward(self, x: Mapping[str, Tensor], edge_index: Tensor, edge_type: Tensor) -> Tensor:
        return self.conv2(self.hidden_states(x, edge_index, edge_type), edge_index, edge_type)

    def architecture(self) -> dict[str, Any]:
        return {"hidden": self.hidden, "num_bases": self.conv1.num_bases, "degree_inputs": self.degree is not None}

    @classmethod
    def from_architecture(
        cls, feature_widths: Mapping[str, int], relations: Sequence[Relation], **architecture: Any
    ) -> HeteroRGCN:
        return cls(
            feature_widths,
            relations,
            architecture["hidden"],
            1,
            architecture.get("num_bases"),
            architecture.get("degree_inputs", False),  # saved before degree inputs: without them
        )

    def score_batch(self, batch: EncodedBatch) -> tuple[Tensor, Tensor]:
        """Logits (B, out) of the targets and each relation's additive share of them (B, R, out); the
        logits are ``self + bias + shares.sum(1)``. ``batch`` must be on the model's device and dtype."""
        incoming: dict[str, list[tuple[int, Relation]]] = {t: [] for t in self.node_types}
        for i, rel in enumerate(self.relations):
            incoming[rel.dst].append((i, rel))
        w1, w2 = self.conv1.relation_weights(), self.conv2.relation_weights()
        blocks = []
        for t in self.node_types:
            x = batch.x[t]
            if x.size(0) == 0:
                blocks.append(x.new_zeros(0, self.hidden))
                continue
            z = self.project[t](x) @ self.conv1.root
            for r, rel in incoming[t]:
                # Project the mean, then zero rows without neighbours: a relation with no neighbours
                # contributes nothing, the projection's bias included.
                mean = self.project[rel.src](batch.means[r]) * batch.has[r].unsqueeze(1)
                z = z + mean @ w1[r]
                if self.degree is not None:
                    z = z + batch.degree[r].unsqueeze(1) * self.degree[r]
            if self.conv1.bias is not None:
                z = z + self.conv1.bias
            blocks.append(torch.relu(z))
        h1 = torch.cat(blocks)
        B, R, H = batch.size, len(self.relations), self.hidden
        msg = h1[batch.edge_node] * batch.edge_norm.unsqueeze(1)
        agg = h1.new_zeros(B * R, H).index_add_(0, batch.edge_target * R + batch.edge_relation, msg)
        shares = torch.einsum("brh,rho->bro", agg.view(B, R, H), w2)
        logits = h1[batch.targets] @ self.conv2.root + shares.sum(1)
        if self.conv2.bias is not None:
            logits = logits + self.conv2.bias
        return logits, shares
