"""Small R-GCNs and the comparisons the exact-inference tests share."""

from __future__ import annotations

import copy

import torch

from fraudgraph.models.hetero import FRAUD_NODE_TYPES, FRAUD_RELATIONS
from fraudgraph.models.rgcn import HeteroRGCN


def make_model(graph, seed: int, num_bases: int | None = 3, hidden: int = 16, out: int = 2) -> HeteroRGCN:
    torch.manual_seed(seed)
    widths = {t: graph.x[t].size(1) for t in FRAUD_NODE_TYPES}
    model = HeteroRGCN(widths, FRAUD_RELATIONS, hidden=hidden, out_channels=out, num_bases=num_bases).eval()
    with torch.no_grad():  # non-zero biases everywhere, so the affine-projection argument is tested
        for m in [*model.project.values(), model.conv1, model.conv2]:
            m.bias.normal_()
        model.degree.normal_()  # and the degree term (zero when a model is made) counts
    return model


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.double() - want.double()).abs().max() / want.double().abs().max().clamp_min(1e-12)).item()


def float32_tolerance(want32: torch.Tensor, want64: torch.Tensor) -> float:
    """1e-5, unless the float32 forward pass itself is farther than that from the exact (float64)
    value: a logit that is a small difference of large terms (seen: 0.037 from O(1) terms on one
    CPU) carries float32 cancellation error, which no scorer can be expected to reproduce."""
    return max(1e-5, 2 * rel_err(want32, want64))


def full_scores(model, graph, dtype=torch.float32):
    m = copy.deepcopy(model).to(dtype)
    with torch.no_grad():
        return m({t: v.to(dtype) for t, v in graph.x.items()}, graph.edge_index, graph.edge_type)


def register_untrained_model(model_dir) -> str:
    """A small untrained R-GCN in a registry of its own, so the worker runs real inference (and its
    model metrics exist) without depending on a trained checkpoint; threshold 0.5 makes it alert."""
    from fraudgraph.models import features as fx
    from fraudgraph.models.registry import ModelRegistry, card_for

    torch.manual_seed(0)
    model = HeteroRGCN(dict(fx.FEATURE_WIDTHS), FRAUD_RELATIONS, hidden=8, out_channels=1, num_bases=2).eval()
    return ModelRegistry(model_dir).register(model, card_for(model, threshold=0.5, target_fpr=0.01)).version
