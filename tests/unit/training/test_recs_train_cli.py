"""``fraudgraph train`` trains and registers the recommender beside the fraud model."""

from __future__ import annotations

import asyncio
import json

import pytest

from fraudgraph.models.recommend import PAID, UserInput
from fraudgraph.models.recs_registry import RecsRegistry
from fraudgraph.models.recs_serving import RecsServer


@pytest.mark.slow  # several seconds: runs in `make test`
def test_train_registers_a_servable_recommender(tmp_path, monkeypatch, capsys):
    from fraudgraph.cli import main

    monkeypatch.setenv("FRAUDGRAPH_MODEL_DIR", str(tmp_path))
    assert (
        main(
            [
                "train",
                "--source",
                "simulator",
                "--customers",
                "100",
                "--hours",
                "8",
                "--epochs",
                "2",
                "--recs-epochs",
                "3",
                "--fraud-rate",
                "0.05",
                "--report",
                str(tmp_path / "report.json"),
            ]
        )
        == 0
    )
    registry = RecsRegistry(tmp_path / "recs")
    version = registry.current_version()
    assert version and version in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())["recs"]
    assert report["version"] == version and report["merchants"] > 10 and report["payments"] > 100
    model, card = registry.load(version)
    assert card.items and len(card.items) == model.num_items and card.trained_on["source"] == "simulator"
    # the fraud model's opinion of each merchant came along, as a probability
    assert 0 < float(model.item_risk.max()) <= 1 and float(model.item_risk.min()) >= 0
    server = RecsServer(registry, "cpu", reload_s=3600)
    assert asyncio.run(server.check_for_new_version())
    cold = UserInput([0.0, 0.0, 0.0, 0.0, 1.0], {PAID: {card.items[0]: 2.0}}, {})
    assert len(server.loaded.candidates([cold], [set()], 5)[0]) == 5

    assert (
        main(
            [
                "train",
                "--source",
                "simulator",
                "--customers",
                "100",
                "--hours",
                "8",
                "--epochs",
                "2",
                "--fraud-rate",
                "0.05",
                "--no-recs",
            ]
        )
        == 0
    )
    assert registry.current_version() == version  # --no-recs leaves the recommender alone
