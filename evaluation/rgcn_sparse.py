"""The forward pass of ``models/rgcn.py``'s ``RGCN`` with each relation's mean aggregation as a
precomputed sparse matrix product: the same function, fast enough to train on millions of edges.

Why: ``RGCNLayer`` gathers ``x[src]`` per edge and scatters into receivers, E x F floats per layer
and more in the backward pass; on YelpChi (7.7M directed edges) that is 5-10 s per epoch on two
cores. Mean aggregation under relation r is the linear map ``A_r`` with ``A_r[v, u] = 1/|N_r(v)|``
(times the number of parallel u -> v edges), so a layer is::

    h'(v) = h(v) @ root + sum_r (A_r h)(v) @ W_r + bias

exactly the arithmetic of ``RGCNLayer.forward``, using that layer's own parameters
(``relation_weights()``, ``root``, ``bias``), so a model trained here is an ordinary ``RGCN``
checkpoint that the incremental scorer and the plain forward pass compute identically (tested).

Two things make it fast: ``A_r`` and its transpose are built once as CSR (torch would otherwise
transpose in every backward pass), and the first layer's ``A_r x`` is computed once, because input
features do not change during training.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from fraudgraph.models.rgcn import RGCN, RGCNLayer


class MeanAggregation:
    """Per-relation row-normalised adjacency ``A_r`` (receiver rows) and ``A_r^T``, as CSR."""

    def __init__(
        self,
        edge_index: Tensor,
        edge_type: Tensor,
        num_nodes: int,
        num_relations: int,
        dtype: torch.dtype = torch.float32,
    ):
        self.num_nodes, self.num_relations = num_nodes, num_relations
        self.forward_ops: list[Tensor] = []
        self.backward_ops: list[Tensor] = []
        with warnings.catch_warnings():  # "sparse CSR is beta" / invariant-check notices
            warnings.simplefilter("ignore", UserWarning)
            for r in range(num_relations):
                src, dst = edge_index[:, edge_type == r]
                deg = torch.bincount(dst, minlength=num_nodes).to(dtype)
                values = deg[dst].reciprocal()
                a = torch.sparse_coo_tensor(torch.stack([dst, src]), values, (num_nodes, num_nodes)).coalesce()
                self.forward_ops.append(a.to_sparse_csr())
                self.backward_ops.append(a.t().coalesce().to_sparse_csr())

    def __call__(self, h: Tensor, r: int) -> Tensor:
        """``A_r @ h`` with a gradient through ``h``."""
        return sparse_matmul(self.forward_ops[r], self.backward_ops[r], h)


def sparse_matmul(a: Tensor, a_t: Tensor, h: Tensor) -> Tensor:
    """``a @ h`` with a gradient through ``h`` (``a_t``: ``a`` transposed, as CSR: torch's own
    backward through a CSR product is slower or missing)."""
    return _SparseMean.apply(h, a, a_t)


class _SparseMean(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, a: Tensor, a_t: Tensor) -> Tensor:
        ctx.a_t = a_t
        return a @ h

    @staticmethod
    def backward(ctx, grad: Tensor):
        return ctx.a_t @ grad, None, None


def layer_forward(layer: RGCNLayer, x: Tensor, agg: MeanAggregation, x_means: list[Tensor] | None = None) -> Tensor:
    """``layer(x, edge_index, edge_type)`` via sparse means; ``x_means`` = precomputed ``[A_r x]``.

    ``A_r`` is linear, so ``(A_r x) W_r = A_r (x W_r)``: without precomputed means the sparse
    product runs on whichever side is narrower. For the output layer (1 logit from 64 hidden) that
    is 64x fewer sparse multiply-adds than aggregating first, in the forward and the backward pass.
    """
    weight = layer.relation_weights()
    out = x @ layer.root
    transform_first = x_means is None and layer.out_channels < x.size(1)
    for r in range(agg.num_relations):
        if transform_first:
            out = out + agg(x @ weight[r], r)
            continue
        mean = x_means[r] if x_means is not None else agg(x, r)
        out = out + mean @ weight[r]
    if layer.bias is not None:
        out = out + layer.bias
    return out


def input_means(x: Tensor, agg: MeanAggregation) -> list[Tensor]:
    """``[A_r x]`` for constant input features: compute once, reuse every epoch."""
    with torch.no_grad():
        return [agg(x, r) for r in range(agg.num_relations)]


def rgcn_forward(model: RGCN, x: Tensor, agg: MeanAggregation, x_means: list[Tensor] | None = None) -> Tensor:
    """``model(x, edge_index, edge_type)`` for a featured (not featureless) ``RGCN``."""
    if model.featureless:
        raise ValueError("sparse forward is for RGCN with input features")
    h = model.hidden_activation(layer_forward(model.conv1, x, agg, x_means))
    h = torch.nn.functional.dropout(h, model.dropout, model.training)
    return layer_forward(model.conv2, h, agg)
