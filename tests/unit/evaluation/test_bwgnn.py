"""BWGNN, the heterophily-aware baseline: its filters are the Beta wavelets of the paper, applied to
the graph as the polynomial in the Laplacian says, and it finds anomalies that only stand out
against their neighbours (where an MLP on the node's own features cannot)."""

from __future__ import annotations

import math

import numpy as np
import torch

from fraudgraph.evaluation.baselines import train_mlp
from fraudgraph.evaluation.bwgnn import BWGNN, beta_wavelet_thetas, normalised_adjacency, train_bwgnn
from fraudgraph.training.scoring_metrics import auc_roc
from fraudgraph.training.splits import stratified_split


def test_order_two_filters_are_the_papers():
    assert beta_wavelet_thetas(2) == [[3.0, -3.0, 0.75], [0.0, 3.0, -1.5], [0.0, 0.0, 0.75]]


def test_each_filter_is_the_beta_kernel_on_the_spectrum():
    order = 3
    for i, theta in enumerate(beta_wavelet_thetas(order)):
        beta = math.gamma(i + 1) * math.gamma(order + 1 - i) / math.gamma(order + 2)
        for lam in (0.0, 0.3, 1.0, 1.7, 2.0):  # the normalised Laplacian's eigenvalues lie in [0, 2]
            kernel = (lam / 2) ** i * (1 - lam / 2) ** (order - i) / beta
            assert math.isclose(sum(c * lam**k for k, c in enumerate(theta)), kernel, abs_tol=1e-12)


def test_filters_apply_the_dense_laplacian_polynomial():
    torch.manual_seed(0)
    n = 12
    pairs = torch.randint(n, (2, 30))
    pairs = pairs[:, pairs[0] != pairs[1]]
    edge_index = torch.cat([pairs, pairs.flip(0)], dim=1)
    dense = torch.zeros(n, n).index_put_(
        (edge_index[1], edge_index[0]), torch.ones(edge_index.size(1)), accumulate=True
    )
    d = dense.sum(1).clamp(min=1).rsqrt()
    laplacian = torch.eye(n) - d[:, None] * dense * d[None, :]
    model = BWGNN(3, hidden=4, order=2)
    captured = {}

    def keep_input(_module, inputs, _output) -> None:  # returns None: the output stays as it is
        captured["filtered"] = inputs[0]

    model.mix.register_forward_hook(keep_input)
    x = torch.randn(n, 3)
    with torch.no_grad():
        model(x, [normalised_adjacency(edge_index, n)])
        h = model.embed(x)
    expected = torch.cat(
        [sum(c * torch.linalg.matrix_power(laplacian, k) @ h for k, c in enumerate(t)) for t in model.thetas], 1
    )
    assert torch.allclose(captured["filtered"], expected, atol=1e-5)


def contrast_graph(seed: int = 0):
    """Cliques whose members share a value (a smooth signal, spread wide across cliques); an anomaly
    is a member that departs from its clique's value by as much as cliques differ from each other.
    Its own feature looks like anyone's; only the contrast with its neighbours gives it away."""
    rng = np.random.default_rng(seed)
    cliques, size = 60, 10
    n = cliques * size
    clique_value = rng.normal(0, 3, cliques)
    x = np.repeat(clique_value, size) + rng.normal(0, 0.1, n)
    y = np.zeros(n, dtype=np.int64)
    anomalies = rng.choice(n, n // 12, replace=False)
    y[anomalies] = 1
    x[anomalies] += rng.choice([-4.0, 4.0], anomalies.size)
    members = np.arange(n).reshape(cliques, size)
    pairs = [(a, b) for m in members for i, a in enumerate(m) for b in m[i + 1 :]]
    p = torch.tensor(pairs).t()
    features = torch.tensor(np.stack([x, rng.normal(0, 1, n)], 1), dtype=torch.float32)
    return features, {"same_clique": torch.cat([p, p.flip(0)], 1)}, torch.from_numpy(y)


def test_finds_anomalies_that_only_contrast_with_their_neighbours():
    x, edges, y = contrast_graph()
    split = stratified_split(y, 0.4, 0.2, seed=0)
    test = split.test.numpy()
    bwgnn = train_bwgnn(x, edges, y, split, seed=0, hidden=16, max_epochs=150)
    mlp = train_mlp(x, y, split, seed=0, max_epochs=60)
    bwgnn_auc, mlp_auc = auc_roc(y.numpy()[test], bwgnn.scores[test]), auc_roc(y.numpy()[test], mlp.scores[test])
    assert bwgnn_auc > 0.95, (bwgnn_auc, mlp_auc)
    assert mlp_auc < 0.8, (bwgnn_auc, mlp_auc)  # the signal is not in the node's own features
