"""Incremental scoring from per-node state equals the full-graph forward pass of the same node."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fraudgraph.models.hetero import FRAUD_NODE_TYPES, FRAUD_RELATIONS, Relation, build_graph, random_fraud_graph
from fraudgraph.models.incremental import (
    IncrementalScorer,
    NodeState,
    link,
    neighbour_states,
    score_from_state,
    states_from_graph,
)

from support.rgcn import float32_tolerance, full_scores, make_model, rel_err

R = {(r.src, r.name): r for r in FRAUD_RELATIONS}


@pytest.mark.parametrize("num_tx", [1, 5, 40, 300])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("num_bases", [None, 3])
def test_every_node_matches_full_graph(num_tx, seed, num_bases):
    graph = random_fraud_graph(num_tx, seed=seed)
    model = make_model(graph, seed, num_bases)
    full32, full64 = full_scores(model, graph), full_scores(model, graph, torch.float64)
    states = states_from_graph(graph)
    scorer = IncrementalScorer(model)
    # every transaction, and a sample of the other types (their fan-out is larger but still exact)
    targets = (
        range(graph.num_nodes)
        if graph.num_nodes <= 200
        else list(range(graph.offsets["Transaction"], graph.num_nodes))[:80]
        + list(range(0, graph.offsets["Transaction"], 7))
    )
    for v in targets:
        got = scorer.score(states[v], neighbour_states(graph, states, v))
        assert rel_err(got, full64[v]) <= 1e-10  # exact: same maths, float64 both sides
        assert rel_err(got, full32[v]) <= float32_tolerance(full32[v], full64[v]), (v, got, full32[v])


def test_new_transaction_scored_from_its_neighbours_state_only():
    """The worker's path: a graph's state exists; a new transaction arrives; link it to its account,
    merchant, device and IP (O(fan-out) state updates), then score it from those five states."""
    graph = random_fraud_graph(60, seed=11)
    model = make_model(graph, 11)
    states = states_from_graph(graph)
    off = graph.offsets

    tx_features = torch.randn(graph.x["Transaction"].size(1), generator=torch.Generator().manual_seed(3))
    account, merchant, device, ip = 4, 2, 1, 3
    tx = NodeState("Transaction", tx_features.double().tolist())
    link(states[off["Account"] + account], tx, R["Account", "INITIATED"])
    link(tx, states[off["Merchant"] + merchant], R["Transaction", "PAYS"])
    link(tx, states[off["Device"] + device], R["Transaction", "USING_DEVICE"])
    link(tx, states[off["IP"] + ip], R["Transaction", "FROM_IP"])
    neighbours = {
        R["Account", "INITIATED"].key: [states[off["Account"] + account]],
        R["Transaction", "PAYS"].inverse().key: [states[off["Merchant"] + merchant]],
        R["Transaction", "USING_DEVICE"].inverse().key: [states[off["Device"] + device]],
        R["Transaction", "FROM_IP"].inverse().key: [states[off["IP"] + ip]],
    }
    got = score_from_state(model, tx, neighbours)

    # The same graph with the transaction in it, scored the expensive way.
    x = dict(graph.x)
    x["Transaction"] = torch.cat([graph.x["Transaction"], tx_features.unsqueeze(0)])
    n_tx = graph.x["Transaction"].size(0)
    old = [(graph.relations[r], u, v) for (u, v), r in zip(graph.edge_index.t().tolist(), graph.edge_type.tolist())]
    local = lambda rel, u, v: (rel, u - off[rel.src], v - off[rel.dst])
    assert FRAUD_NODE_TYPES[-1] == "Transaction"  # appending one transaction keeps every global id
    edges = [local(*e) for e in old] + [
        (R["Account", "INITIATED"], account, n_tx),
        (R["Account", "INITIATED"].inverse(), n_tx, account),
        (R["Transaction", "PAYS"], n_tx, merchant),
        (R["Transaction", "PAYS"].inverse(), merchant, n_tx),
        (R["Transaction", "USING_DEVICE"], n_tx, device),
        (R["Transaction", "USING_DEVICE"].inverse(), device, n_tx),
        (R["Transaction", "FROM_IP"], n_tx, ip),
        (R["Transaction", "FROM_IP"].inverse(), ip, n_tx),
    ]
    bigger = build_graph(x, FRAUD_RELATIONS, edges, add_inverses=False)
    bigger.validate()
    want, want64 = full_scores(model, bigger)[-1], full_scores(model, bigger, torch.float64)[-1]
    assert rel_err(got, want64) <= 1e-10
    assert rel_err(got, want) <= float32_tolerance(want, want64)
    # and the incremental state equals the state rebuilt from the bigger graph
    rebuilt = states_from_graph(bigger)
    assert rebuilt[-1].neighbours.counts == tx.neighbours.counts


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    num_tx=st.integers(1, 60),
    seed=st.integers(0, 10_000),
    hidden=st.sampled_from([4, 16]),
    num_bases=st.sampled_from([None, 1, 5]),
    scale=st.sampled_from([1e-3, 1.0, 1e3]),
)
def test_random_graphs_property(num_tx, seed, hidden, num_bases, scale):
    graph = random_fraud_graph(num_tx, seed=seed)
    graph.x = {t: v * scale for t, v in graph.x.items()}
    model = make_model(graph, seed, num_bases, hidden=hidden)
    full32, full64 = full_scores(model, graph), full_scores(model, graph, torch.float64)
    states = states_from_graph(graph)
    scorer = IncrementalScorer(model)
    off = graph.offsets["Transaction"]
    for v in range(off, graph.num_nodes):
        got = scorer.score(states[v], neighbour_states(graph, states, v))
        assert rel_err(got, full64[v]) <= 1e-10
        assert rel_err(got, full32[v]) <= float32_tolerance(full32[v], full64[v])


def test_stale_or_wrong_state_is_refused():
    graph = random_fraud_graph(10, seed=0)
    model = make_model(graph, 0)
    states = states_from_graph(graph)
    v = graph.offsets["Transaction"]
    neighbours = neighbour_states(graph, states, v)
    key = R["Account", "INITIATED"].key
    with pytest.raises(ValueError, match="stale"):
        score_from_state(model, states[v], {**neighbours, key: []})
    with pytest.raises(ValueError, match="no relation"):
        score_from_state(model, states[v], {**neighbours, "Planet:ORBITS:Transaction": []})
    with pytest.raises(ValueError):
        link(states[0], states[1], Relation("Account", "INITIATED", "Transaction"))  # a Customer is no Account


def test_state_is_model_agnostic_plain_floats():
    # What the worker stores is raw numbers only: a new model version reads the same state.
    graph = random_fraud_graph(5, seed=1)
    s = states_from_graph(graph)[graph.offsets["Transaction"]]
    assert all(isinstance(x, float) for x in s.features)
    assert all(isinstance(x, float) for v in s.neighbours.sums.values() for x in v)
    a, b = make_model(graph, 1), make_model(graph, 2)
    n = neighbour_states(graph, states_from_graph(graph), graph.offsets["Transaction"])
    assert not torch.allclose(score_from_state(a, s, n), score_from_state(b, s, n))
