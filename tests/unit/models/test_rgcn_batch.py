"""The batched incremental forward (serving and training) equals the full-graph forward pass."""

from __future__ import annotations

import pytest
import torch

from fraudgraph.models.batch import ScoringRequest, encode
from fraudgraph.models.hetero import random_fraud_graph
from fraudgraph.models.incremental import IncrementalScorer, neighbour_states, states_from_graph

from support.rgcn import float32_tolerance, full_scores, make_model, rel_err


def requests_for(graph, states, targets):
    return [ScoringRequest(states[v], neighbour_states(graph, states, v)) for v in targets]


@pytest.mark.parametrize("num_tx", [1, 7, 300])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("num_bases", [None, 3])
def test_one_batch_of_every_node_matches_full_graph(num_tx, seed, num_bases):
    graph = random_fraud_graph(num_tx, seed=seed)
    model = make_model(graph, seed, num_bases)
    full32, full64 = full_scores(model, graph), full_scores(model, graph, torch.float64)
    states = states_from_graph(graph)
    targets = list(range(graph.num_nodes))  # every type: merchants and devices have fan-out > 1
    batch = encode(requests_for(graph, states, targets), model)
    with torch.no_grad():
        got32, shares = model.score_batch(batch.to("cpu", torch.float32))
        got64, _ = model.double().score_batch(batch.to("cpu", torch.float64))
    assert rel_err(got64, full64[targets]) <= 1e-10
    # the bar: relative error <= 1e-5 in float32 (or the float32 reference's own error)
    for i, v in enumerate(targets):
        assert rel_err(got32[i], full32[v]) <= float32_tolerance(full32[v], full64[v]), (v, got32[i], full32[v])
    # shares are additive parts of the logit: what remains is h1(target) @ root2 + b2
    with torch.no_grad():
        _, shares64 = model.score_batch(batch.to("cpu", torch.float64))
        inc = IncrementalScorer(model)
        for i, v in enumerate(targets[:20]):
            own = inc.hidden(states[v]) @ inc.root2 + inc.b2
            assert rel_err(got64[i] - shares64[i].sum(0), own) <= 1e-10
    assert shares.shape == (len(targets), len(model.relations), got32.size(1))


def test_batch_equals_one_at_a_time_and_order_does_not_matter():
    graph = random_fraud_graph(60, seed=4)
    model = make_model(graph, 4).double()
    states = states_from_graph(graph)
    tx = list(range(graph.offsets["Transaction"], graph.num_nodes))
    one = IncrementalScorer(model)
    with torch.no_grad():
        batched, _ = model.score_batch(encode(requests_for(graph, states, tx), model).to("cpu", torch.float64))
        reversed_, _ = model.score_batch(encode(requests_for(graph, states, tx[::-1]), model).to("cpu", torch.float64))
    for i, v in enumerate(tx):
        assert rel_err(batched[i], one.score(states[v], neighbour_states(graph, states, v))) <= 1e-12
    assert torch.allclose(batched, reversed_.flip(0), rtol=0, atol=1e-12)


def test_gradients_flow_to_every_parameter():
    """Training runs this same forward: each weight the serving path uses must get a gradient."""
    graph = random_fraud_graph(40, seed=5)
    model = make_model(graph, 5, num_bases=3, out=1)
    states = states_from_graph(graph)
    tx = list(range(graph.offsets["Transaction"], graph.num_nodes))
    logits, _ = model.score_batch(encode(requests_for(graph, states, tx), model).to("cpu", torch.float32))
    logits.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    # Customers never send to a transaction's neighbours' layer-1 except via OWNS/LOGGED_IN/LOGIN_FROM,
    # which random graphs have, so every parameter takes part.
    assert missing == []


def test_inconsistent_state_is_refused():
    graph = random_fraud_graph(10, seed=6)
    model = make_model(graph, 6)
    states = states_from_graph(graph)
    v = graph.offsets["Transaction"]
    good = neighbour_states(graph, states, v)
    stale = {k: vs[:-1] for k, vs in good.items()}
    with pytest.raises(ValueError, match="stale or missing"):
        encode([ScoringRequest(states[v], stale)], model)
    with pytest.raises(ValueError, match="no relation into"):
        encode([ScoringRequest(states[v], {**good, "IP:nope:Transaction": []})], model)
