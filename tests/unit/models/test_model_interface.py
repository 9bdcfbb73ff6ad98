"""A second model is one file implementing ``ScoringModel`` and one line in ``KINDS``: registered,
loaded, served and explained with no edit to the registry or serving."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from fraudgraph.models import interface
from fraudgraph.models.batch import EncodedBatch, ScoringRequest
from fraudgraph.models.hetero import FRAUD_RELATIONS, Relation, random_fraud_graph
from fraudgraph.models.incremental import neighbour_states, states_from_graph
from fraudgraph.models.registry import ModelRegistry, RegistryError, card_for
from fraudgraph.models.rgcn import HeteroRGCN
from fraudgraph.models.serving import LoadedModel

GRAPH = random_fraud_graph(60, seed=3)
WIDTHS = {t: GRAPH.x[t].size(1) for t in GRAPH.node_types}
STATES = states_from_graph(GRAPH)
REQUESTS = [
    ScoringRequest(STATES[v], neighbour_states(GRAPH, STATES, v))
    for v in range(GRAPH.offsets["Transaction"], GRAPH.num_nodes)
]


class TargetOnly(nn.Module):
    """A logistic model of the transaction's own features: no relation contributes."""

    kind = "target-only"

    def __init__(self, feature_widths: Mapping[str, int], relations: Sequence[Relation], scale: float):
        super().__init__()
        self.node_types, self.feature_widths, self.relations = (
            list(feature_widths),
            dict(feature_widths),
            list(relations),
        )
        self.scale = scale
        self.linear = nn.Linear(feature_widths["Transaction"], 1)

    def architecture(self) -> dict[str, Any]:
        return {"scale": self.scale}

    @classmethod
    def from_architecture(cls, feature_widths, relations, **architecture: Any) -> TargetOnly:
        return cls(feature_widths, relations, **architecture)

    def score_batch(self, batch: EncodedBatch) -> tuple[Tensor, Tensor]:
        offset = sum(batch.x[t].size(0) for t in self.node_types[: self.node_types.index("Transaction")])
        logits = self.linear(batch.x["Transaction"][batch.targets - offset]) * self.scale
        return logits, logits.new_zeros(batch.size, len(self.relations), 1)


def test_a_second_kind_is_registered_loaded_and_served(tmp_path, monkeypatch):
    monkeypatch.setitem(interface.KINDS, TargetOnly.kind, TargetOnly)
    torch.manual_seed(0)
    model = TargetOnly(WIDTHS, FRAUD_RELATIONS, scale=2.0).eval()
    reg = ModelRegistry(tmp_path)
    card = reg.register(model, card_for(model, threshold=0.5, target_fpr=0.01))
    assert card.version.startswith("target-only-") and card.architecture == {"scale": 2.0}
    loaded, loaded_card = reg.load(card.version)
    assert isinstance(loaded, TargetOnly) and loaded.scale == 2.0
    served = LoadedModel(loaded, loaded_card, torch.device("cpu")).infer(REQUESTS)
    with torch.no_grad():
        rows = torch.tensor([r.target.features for r in REQUESTS], dtype=torch.float32)
        want = torch.sigmoid(model.linear(rows)[:, 0] * 2.0)
    assert [o.score for o in served] == pytest.approx(want.tolist(), abs=1e-6)
    assert all(o.shares == {} for o in served)  # it says no relation drove it


def test_an_unknown_kind_is_refused_with_the_known_ones(tmp_path):
    torch.manual_seed(0)
    model = HeteroRGCN(WIDTHS, FRAUD_RELATIONS, hidden=8, out_channels=1, num_bases=2)
    reg = ModelRegistry(tmp_path)
    card = reg.register(model, card_for(model, threshold=0.5, target_fpr=0.01))
    path = tmp_path / card.version / "card.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "kind": "gbdt"}))
    with pytest.raises(RegistryError, match=r"unknown kind 'gbdt' \(known: \['rgcn'\]\)"):
        reg.load(card.version)


def test_a_card_written_before_kinds_loads_as_the_rgcn_it_was(tmp_path):
    torch.manual_seed(0)
    # Cards that old predate degree inputs too.
    model = HeteroRGCN(WIDTHS, FRAUD_RELATIONS, hidden=8, out_channels=1, num_bases=2, degree_inputs=False).eval()
    reg = ModelRegistry(tmp_path)
    card = reg.register(model, card_for(model, threshold=0.5, target_fpr=0.01))
    path = tmp_path / card.version / "card.json"
    old = json.loads(path.read_text())
    old.pop("kind")
    architecture = old.pop("architecture")
    assert architecture.pop("degree_inputs") is False
    old.update(architecture)  # the older layout: hidden and num_bases at the top level
    path.write_text(json.dumps(old))
    loaded, loaded_card = reg.load(card.version)
    assert loaded_card.kind == "rgcn" and loaded_card.architecture == {"hidden": 8, "num_bases": 2}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
