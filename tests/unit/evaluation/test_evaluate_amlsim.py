"""The AMLSim evaluation: end to end on the first time steps of the real sample (report structure,
metrics in range, windows in time order), its time split, and its "without the amount" view."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal

import pytest
import torch

from fraudgraph.connectors import events as ev
from fraudgraph.connectors.amlsim import DEFAULT_AMLSIM_DIR
from fraudgraph.evaluation import amlsim as am
from fraudgraph.evaluation import csv_log as cl
from fraudgraph.models.batch import encode
from fraudgraph.models.features import FEATURE_WIDTHS
from fraudgraph.models.hetero import FRAUD_RELATIONS
from fraudgraph.models.rgcn import HeteroRGCN
from fraudgraph.training.replay import replay

needs_data = pytest.mark.skipif(
    not (DEFAULT_AMLSIM_DIR / "transactions.csv").exists(), reason="../shared/datasets/amlsim_fanin200 is not present"
)


@pytest.fixture
def one_thread():
    """2 shared cores: torch's two threads spin against each other and other tenants (measured 5-10x
    slower training on a loaded box than one thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow  # ~15 s: trains the R-GCN, the MLP and the trees
@needs_data
def test_evaluate_amlsim_end_to_end_on_the_first_steps(tmp_path, one_thread):
    out = tmp_path / "amlsim.json"
    report = am.evaluate(out=str(out), max_step=35, quick=True, command="test")
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["benchmark"] == "amlsim" and report["machine"]["cores"] and report["data"]["max_step"] == 35

    # the split is by time: whole steps, train before validation before test, nothing lost
    w = report["split"]["windows"]
    assert (
        w["train"]["last_ts_ms"]
        < w["validation"]["first_ts_ms"]
        <= w["validation"]["last_ts_ms"]
        < w["test"]["first_ts_ms"]
    )
    assert w["train"]["first_step"] == 1 and w["test"]["last_step"] == 35
    assert (
        w["train"]["last_step"] < w["validation"]["first_step"]
        and w["validation"]["last_step"] < w["test"]["first_step"]
    )
    assert sum(x["n"] for x in w.values()) == report["data"]["transactions"]
    assert sum(x["positives"] for x in w.values()) == report["data"]["positives"]
    assert report["data"]["unlabelled"] == 0 and all(x["unlabelled"] == 0 for x in w.values())
    assert all(x["positives"] > 0 for x in w.values())
    assert 0.5 <= w["train"]["fraction"] <= 0.7

    for variant in ("with_amount", "without_amount"):
        results = report["results_test"][variant]
        assert set(results) == {"rgcn", "mlp", "gbt"}
        for name, m in results.items():
            for key in (
                "auc_roc",
                "auc_pr",
                "recall_at_0.1pct_fpr",
                "recall_at_1pct_fpr",
                "alert_rate_at_val_threshold",
                "val_auc_roc",
                "recall_at_val_threshold",
                "fpr_at_val_threshold",
            ):
                assert 0.0 <= m[key] <= 1.0, (variant, name, key, m)
            assert m["train_seconds"] >= 0
            assert m["recall_at_0.1pct_fpr"] <= m["recall_at_1pct_fpr"]  # a stricter budget never catches more
            assert set(m["recall_at_val_threshold_by_group"]) <= {"pattern_sized", "ordinary_sized"}
    # the amount alone separates pattern transfers: every model finds it
    assert all(m["auc_roc"] >= 0.9 for m in report["results_test"]["with_amount"].values())
    assert report["rules_test"]["amount_rule"]["auc_roc"] >= 0.9
    # without it the transfer's own features are constant: the MLP can only be at chance
    assert report["results_test"]["without_amount"]["mlp"]["auc_roc"] == 0.5
    assert report["model_info"]["with_amount"]["rgcn"]["config"]["epochs"] == cl.QUICK["rgcn"]["epochs"]


def test_time_split_cuts_between_distinct_times():
    ts = [1] * 5 + [2] * 30 + [3] * 20 + [4] * 25 + [5] * 20
    a, b = cl.time_split(ts)
    assert 0 < a < b < len(ts)
    assert ts[a - 1] < ts[a] and ts[b - 1] < ts[b]  # no instant on both sides of a cut
    assert (a, b) == (55, 80)  # the boundaries nearest 60 and 80
    cfg = cl.train_config_for(len(ts), a, b)
    n = len(ts)  # what models.train cuts at
    assert int(n * cfg.train_frac) == a and int(n * (cfg.train_frac + cfg.val_frac)) == b
    with pytest.raises(ValueError):
        cl.time_split([1, 1, 1, 2])
    with pytest.raises(ValueError):
        cl.time_split([2, 1, 3, 4, 5])


@needs_data
def test_without_amount_is_the_replay_of_the_log_with_every_amount_zero():
    events = am.load_events(max_step=12)
    original = [e.request for e in replay(events).examples]
    stripped = cl.without_amount(original)
    zero = [dataclasses.replace(e, amount=Decimal(0)) if isinstance(e, ev.TransactionCreated) else e for e in events]
    zeroed = [e.request for e in replay(zero).examples]
    assert len(stripped) == len(zeroed) > 500
    model = HeteroRGCN(FEATURE_WIDTHS, FRAUD_RELATIONS, hidden=8, out_channels=1)
    a, b = encode(stripped, model), encode(zeroed, model)
    for name in ("x", "means", "has"):
        for k, t in getattr(a, name).items():
            assert torch.equal(t, getattr(b, name)[k]), (name, k)
    assert torch.equal(a.edge_node, b.edge_node) and torch.equal(a.edge_norm, b.edge_norm)
    # and every count the trees read is untouched
    assert [cl.state_row(r.target) for r in stripped] == [cl.state_row(r.target) for r in zeroed]
    assert all(r.target.features[cl.AMOUNT] > 0 for r in original)  # the originals still have theirs


def test_point_in_time_graph_rows_and_edges():
    from fraudgraph.models.batch import ScoringRequest
    from fraudgraph.models.incremental import NeighbourSums, NodeState

    tx_w, acc_w = FEATURE_WIDTHS["Transaction"], FEATURE_WIDTHS["Account"]
    acc = lambda sent: NodeState(
        "Account",
        [0.0] * (acc_w - 1) + [1.0],
        NeighbourSums(
            {"Transaction:rev_INITIATED:Account": sent}, {"Transaction:rev_INITIATED:Account": [float(sent)] * tx_w}
        ),
    )
    tx = lambda amount: NodeState(
        "Transaction",
        [amount] + [0.0] * (tx_w - 1),
        NeighbourSums({"Account:INITIATED:Transaction": 1}, {"Account:INITIATED:Transaction": [1.0] * acc_w}),
    )
    reqs = [
        ScoringRequest(tx(1.0), {"Account:INITIATED:Transaction": [acc(1)]}),
        ScoringRequest(tx(2.0), {"Account:INITIATED:Transaction": [acc(3)]}),
    ]
    x, edges, names = cl.point_in_time_graph(reqs)
    assert x.shape[0] == 4 and x.shape[1] == len(names)
    assert edges["Account:INITIATED:Transaction"].tolist() == [[2, 3], [0, 1]]
    assert "Transaction.log_amount" in names and "Account<rev_INITIATED.log_count" in names
    col = names.index("Account<rev_INITIATED.log_count")
    assert x[2:, col].tolist() == pytest.approx(
        [torch.log1p(torch.tensor(1.0)).item(), torch.log1p(torch.tensor(3.0)).item()]
    )
