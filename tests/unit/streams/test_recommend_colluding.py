"""Colluding merchants from the simulator are never recommended once flagged.

The worst case on purpose: the recommender is trained on the log *before any fraud report arrived*,
so it learned the colluding merchants' payments as ordinary "will pay" links (many accounts paying
a new merchant within minutes makes it look popular), and the test first checks that they really do
rank in some accounts' unfiltered top 10. Then the reports arrive (the worker's state code applies
the whole log), and no answer to any account may contain a flagged colluding merchant.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from fraudgraph.connectors import events as ev
from fraudgraph.models.recommend import RiskParams, account_input, merchant_risk
from fraudgraph.models.recs_registry import RecsRegistry
from fraudgraph.models.recs_serving import RecsServer
from fraudgraph.settings import Settings
from fraudgraph.stack.simulator.config import SimConfig
from fraudgraph.stack.simulator.generator import generate
from fraudgraph.streams.recommendations import answer_batch
from fraudgraph.streams.state import node_key
from fraudgraph.training import replay as rp
from fraudgraph.training.recs_fit import fit_recommender
from fraudgraph.training.recs_replay import recs_replay
from fraudgraph.training.recs_train import RecsConfig

K = 10


@pytest.mark.slow  # several seconds: runs in `make test`
def test_flagged_colluding_merchants_never_appear_in_recommendations(tmp_path):
    sim = SimConfig(customers=120, duration_s=20 * 3600, seed=11, fraud_rate=0.06)
    settings = Settings()
    events = rp.event_time_order(rp.decoded(rp.simulator_records(sim, settings), settings))
    _, truth = generate(sim)
    log = recs_replay(events)  # every node's state at the log's end: the reports have arrived
    colluding_tx = {t for t, pattern in truth.labels.items() if pattern == "colluding_merchant"}
    colluding = {p.merchant_id for p in log.payments if p.transaction_id in colluding_tx}
    assert colluding, "the run must contain colluding-merchant episodes"

    torch.manual_seed(0)
    before_reports = [e for e in events if not isinstance(e, ev.FraudReported)]
    model, items, _ = fit_recommender(before_reports, RecsConfig(dim=16, epochs=8, patience=8))
    registry = RecsRegistry(tmp_path / "recs")
    registry.register(model, {"items": items})
    server = RecsServer(registry, "cpu", reload_s=3600)
    assert asyncio.run(server.check_for_new_version())

    store = log.states
    risk = RiskParams()
    flagged = {
        m
        for m in colluding
        if merchant_risk(store.get(node_key("Merchant", m)), server.loaded.prior[m], risk) >= risk.max_risk
    }
    assert flagged, "some colluding merchant must have been reported by the log's end"

    accounts = sorted(int(k.split(":")[1]) for k, s in store.items() if s.node_type == "Account" and s.merchants)
    users = [account_input(store[node_key("Account", a)]) for a in accounts]
    unfiltered = server.loaded.candidates(users, [set()] * len(users), K)
    pushed = {m for cands in unfiltered for m, _ in cands} & flagged
    assert pushed, "without the risk filter the model does rank flagged colluding merchants in some top 10"

    raws = [f'{{"request_id": "q{a}", "account_id": {a}, "k": {K}}}'.encode() for a in accounts]
    replies = asyncio.run(answer_batch(raws, store, server, 100, risk))
    assert all(r["status"] == "ok" and len(r["merchants"]) == K for r in replies)
    recommended = {m["merchant_id"] for r in replies for m in r["merchants"]}
    assert not recommended & flagged
    assert sum(r["excluded"]["risk"] for r in replies) > 0
