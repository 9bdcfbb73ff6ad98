"""Piecewise-linear encoding of numeric features (Gorishniy, Rubachev & Babenko, "On Embeddings for
Numerical Features in Tabular Deep Learning", NeurIPS 2022).

Why: on YelpChi's metadata features every neural model plateaued at about 0.82 AUC while trees
reached 0.83: the features are heavy-tailed counts and spans, where a threshold says more than a
linear weight. The encoding gives a linear layer those thresholds. Feature ``v`` with quantile
edges ``b_0 < ... < b_T`` becomes ``T`` columns ``clip((v - b_{t-1}) / (b_t - b_{t-1}), 0, 1)``:
1 for every bin wholly below ``v``, the fraction inside ``v``'s bin, 0 above. It is monotone and
loses nothing (``v`` is recovered from the column sum), and for an R-GCN it does more than for an
MLP: the *mean* of encoded neighbours is, per edge, the share of neighbours above that quantile,
a histogram of the neighbourhood where the plain mean only gives its centre.

A column with at most two distinct quantile edges (binary or constant) passes through unchanged.
Edges are fitted on the rows given (pass training rows for an inductive model); they are part of
the model's input spec, so keep them with the model.
"""

from __future__ import annotations

import torch
from torch import Tensor


def fit_bin_edges(x: Tensor, bins: int) -> list[Tensor]:
    """Distinct quantile edges of each column of ``x`` (rows = examples)."""
    if bins < 1:
        raise ValueError("bins must be >= 1")
    q = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    return [torch.unique(torch.quantile(x[:, j].double(), q)) for j in range(x.size(1))]


def piecewise_linear(x: Tensor, edges: list[Tensor]) -> Tensor:
    """The encoding of ``x`` under ``edges`` (from ``fit_bin_edges``), in ``x``'s dtype."""
    if len(edges) != x.size(1):
        raise ValueError(f"{len(edges)} edge lists for {x.size(1)} columns")
    cols = []
    for j, e in enumerate(edges):
        v = x[:, j : j + 1].double()
        if e.numel() <= 2:
            cols.append(v)
            continue
        lo, hi = e[:-1], e[1:]
        cols.append(((v - lo) / (hi - lo)).clamp(0, 1))
    return torch.cat(cols, dim=1).to(x.dtype)
