"""The recommender's model, top-K, exclusions and fraud-risk filter, as pure functions."""

from __future__ import annotations

import math

import pytest
import torch

from fraudgraph.models.recommend import (
    RecsModel,
    RiskParams,
    UserInput,
    encode_users,
    merchant_risk,
    rerank,
    top_candidates,
)
from fraudgraph.streams.aggregates import RecentSet, RunningMoments

H = "Item:rev_CHOSE:User"
H2 = "Item:rev_DISLIKED:User"
F = "Event:rev_DID:User"


def small_model(seed: int = 0, items: int = 6) -> RecsModel:
    torch.manual_seed(seed)
    model = RecsModel(items, 3, [H, H2], {F: 2}, {"Event:ABOUT:Item": 2}, dim=4)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    model.set_item_means("Event:ABOUT:Item", [[0.5, -1.0], None, [2.0, 0.0], None, [1.0, 1.0], [0.0, 3.0]][:items])
    return model


def reference_score(model: RecsModel, user: UserInput, index: dict, item: int) -> float:
    item_id = next(i for i, n in index.items() if n == item)
    """The encoder and DistMult decoder written out per node, with loops, from the module docstring."""

    def lin(layer, v):
        out = v @ layer.weight.T
        return out + layer.bias if layer.bias is not None else out

    key = "Event__ABOUT__Item"
    h1 = []
    for m in range(model.num_items):
        z = lin(model.item_root, model.item_embedding.weight[m])
        if getattr(model, f"has_{key}")[m] > 0:
            z = z + lin(model.item_feature[key], getattr(model, f"means_{key}")[m])
        h1.append(torch.relu(z))
    z_u = lin(model.user_root, torch.tensor(user.features))
    if F in user.means:
        z_u = z_u + lin(model.user_feature["Event__rev_DID__User"], torch.tensor(user.means[F]))
    for rel in (H, H2):
        known = {index[i]: w for i, w in user.history.get(rel, {}).items() if i in index}
        if known:
            mean = sum(h1[m] * w for m, w in known.items()) / sum(known.values())
            z_u = z_u + lin(model.user_history[rel.replace(":", "__")], mean)
    z_m = lin(model.item_out, h1[item])
    repeat = sum(
        model.repeat[r] * math.log1p(user.history.get(rel, {}).get(item_id, 0.0)) for r, rel in enumerate((H, H2))
    )
    return float((z_u * model.relation * z_m).sum() + model.item_bias[item] + repeat)


def test_batched_scores_equal_the_per_node_reference():
    model = small_model()
    index = {f"m{i}": i for i in range(6)}
    users = [
        UserInput([1.0, 0.0, 2.0], {H: {"m0": 3.0, "m2": 1.0}, H2: {"m5": 1.0}}, {F: [0.3, 0.7]}),
        UserInput([0.0, 1.0, 0.0], {H: {}}, {}),  # cold: own features only
        UserInput([1.0, 1.0, 1.0], {H: {"m4": 1.0, "unknown": 9.0}}, {F: [1.0, 0.0]}),
    ]  # new item: ignored
    with torch.no_grad():
        scores = model(encode_users(users, model, index))
        for b, u in enumerate(users):
            for m in range(6):
                assert scores[b, m].item() == pytest.approx(reference_score(model, u, index, m), rel=1e-5, abs=1e-5)


def test_history_is_a_count_weighted_mean_so_scale_does_not_matter():
    model = small_model(1)
    with torch.no_grad():
        model.repeat.zero_()  # the existing-link term does see the counts themselves
    index = {f"m{i}": i for i in range(6)}
    a = UserInput([1.0, 0.0, 0.0], {H: {"m0": 1.0, "m3": 2.0}})
    b = UserInput([1.0, 0.0, 0.0], {H: {"m0": 10.0, "m3": 20.0}})
    c = UserInput([1.0, 0.0, 0.0], {H: {"m0": 2.0, "m3": 1.0}})
    with torch.no_grad():
        s = model(encode_users([a, b, c], model, index))
    assert torch.allclose(s[0], s[1], atol=1e-6)
    assert not torch.allclose(s[0], s[2], atol=1e-4)


def test_encode_refuses_inputs_the_model_cannot_read():
    model = small_model()
    index = {f"m{i}": i for i in range(6)}
    with pytest.raises(ValueError, match="features"):
        encode_users([UserInput([1.0, 2.0], {})], model, index)
    with pytest.raises(ValueError, match="history relation"):
        encode_users([UserInput([1.0, 2.0, 3.0], {"Other:X:User": {"m1": 1.0}})], model, index)
    with pytest.raises(ValueError, match="mean features"):
        encode_users([UserInput([1.0, 2.0, 3.0], {}, {F: [1.0]})], model, index)


def test_top_candidates_leave_out_exclusions_and_run_short_when_the_catalogue_does():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0]])
    values, idx = top_candidates(scores, [[0, 2], []], 3)
    assert idx[0].tolist()[:2] == [1, 3] and values[0, 2].item() == float("-inf")
    assert idx[1].tolist() == [3, 2, 1]
    assert scores[0, 0] == 5.0  # the caller's tensor is not modified
    values, idx = top_candidates(scores, [[], []], 10)
    assert idx.shape == (2, 4)


def test_rerank_drops_risky_merchants_and_down_ranks_the_rest():
    risk = {"safe": 0.0, "some": 0.15, "flagged": 1.0, "risky": 0.2}
    cands = [("flagged", 9.0), ("risky", 8.0), ("some", 5.0), ("safe", 4.9), ("low", 1.0), ("gone", float("-inf"))]
    kept, dropped = rerank(cands, lambda m: risk.get(m, 0.0), 3, max_risk=0.2)
    assert [r.item for r in kept] == ["safe", "some", "low"]  # 5.0 + log(0.85) < 4.9
    assert dropped == 2
    assert kept[1].rank_score == pytest.approx(5.0 + math.log(0.85))
    kept, _ = rerank(cands, lambda m: risk.get(m, 0.0), 10, max_risk=0.1)
    assert [r.item for r in kept] == ["safe", "low"]


class _Merchant:
    def __init__(self, payments: int, reports: int, payers: int):
        self.amounts = RunningMoments(count=payments)
        self.fraud_reports = reports
        self.reported = RecentSet()
        for p in range(payers):
            self.reported.add(f"account:{p}", 0)


def test_merchant_risk_from_prior_report_share_and_the_colluding_test():
    params = RiskParams(max_risk=0.2, min_reported_payers=3, report_share=0.2)
    assert merchant_risk(None, 0.05, params) == pytest.approx(0.05)
    assert merchant_risk(_Merchant(100, 0, 0), 0.0, params) == 0.0
    assert merchant_risk(_Merchant(100, 5, 1), 0.01, params) == pytest.approx(0.05)  # share of reported payments
    assert merchant_risk(_Merchant(100, 5, 1), 0.3, params) == pytest.approx(0.3)  # the fraud model's prior
    assert merchant_risk(_Merchant(10, 2, 2), 0.0, params) == pytest.approx(0.2)
    assert merchant_risk(_Merchant(10, 3, 3), 0.0, params) == 1.0  # flagged: enough distinct victims, high share
    assert merchant_risk(_Merchant(100, 3, 3), 0.0, params) == pytest.approx(0.03)  # many victims, small share
    assert merchant_risk(_Merchant(0, 1, 1), 0.0, params) == 1.0  # reports before any payment was seen
