"""A model knows the event fields it was trained with: a worker whose mapping lacks one refuses it,
naming the fields, and keeps serving what it had; a card from before cards listed fields loads."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
import torch

from fraudgraph.models.hetero import FRAUD_RELATIONS, random_fraud_graph
from fraudgraph.models.registry import ModelRegistry, RegistryError, card_for, missing_fields
from fraudgraph.models.rgcn import HeteroRGCN
from fraudgraph.models.serving import ModelServer

GRAPH = random_fraud_graph(40, seed=3)
WIDTHS = {t: GRAPH.x[t].size(1) for t in GRAPH.node_types}
TRAINED = ["CustomerUpserted.kyc_level", "TransactionRow.amount", "TransactionRow.device_id", "TransactionRow.ip"]
WORKER = {"CustomerUpserted.kyc_level", "TransactionRow.amount", "TransactionRow.merchant_id"}  # no device, no IP


def register(reg: ModelRegistry, seed: int, fields: list[str] | None):
    torch.manual_seed(seed)
    model = HeteroRGCN(WIDTHS, FRAUD_RELATIONS, hidden=8, out_channels=1, num_bases=2).eval()
    trained_on = {"source": "test"} if fields is None else {"source": "test", "fields": fields}
    return reg.register(model, card_for(model, threshold=0.5, target_fpr=0.01, trained_on=trained_on))


def test_a_model_trained_with_a_field_the_worker_lacks_is_refused_naming_it(tmp_path):
    reg = ModelRegistry(tmp_path)
    card = register(reg, 1, TRAINED)
    assert missing_fields(card, WORKER) == ["TransactionRow.device_id", "TransactionRow.ip"]
    with pytest.raises(RegistryError) as err:
        reg.load(card.version, fields=WORKER)
    assert "TransactionRow.device_id, TransactionRow.ip" in str(err.value) and card.version in str(err.value)


def test_a_worker_with_every_field_loads_it(tmp_path):
    reg = ModelRegistry(tmp_path)
    card = register(reg, 1, TRAINED)
    _, loaded = reg.load(card.version, fields=set(TRAINED) | WORKER)
    assert loaded.trained_on["fields"] == TRAINED
    reg.load(card.version)  # no fields given: nothing to check (offline tools)


def test_a_card_without_fields_loads_as_before(tmp_path):
    reg = ModelRegistry(tmp_path)
    card = register(reg, 1, None)
    _, loaded = reg.load(card.version, fields=set())
    assert "fields" not in loaded.trained_on and missing_fields(loaded, set()) == []


def test_a_malformed_field_list_is_an_unreadable_card(tmp_path):
    reg = ModelRegistry(tmp_path)
    card = register(reg, 1, TRAINED)
    path = tmp_path / card.version / "card.json"
    raw = json.loads(path.read_text())
    raw["trained_on"]["fields"] = "TransactionRow.device_id"
    path.write_text(json.dumps(raw))
    with pytest.raises(RegistryError, match="trained_on.fields"):
        reg.load(card.version, fields=WORKER)


def test_the_server_refuses_it_loudly_and_keeps_serving_the_old_model(tmp_path, caplog):
    reg = ModelRegistry(tmp_path)
    old = register(reg, 1, None)

    async def run():
        server = ModelServer(reg, "cpu", reload_s=3600, fields=WORKER)
        await server.start()
        try:
            assert server.version == old.version
            new = register(reg, 2, TRAINED)  # promoted: CURRENT now names it
            swapped = await server.check_for_new_version()
            return new, swapped, server.version
        finally:
            await server.stop()

    with caplog.at_level(logging.ERROR):
        new, swapped, serving = asyncio.run(run())
    assert not swapped and serving == old.version
    refusal = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(new.version in m and "TransactionRow.device_id, TransactionRow.ip" in m for m in refusal), refusal


def test_with_no_other_model_the_server_serves_none(tmp_path):
    reg = ModelRegistry(tmp_path)
    register(reg, 1, TRAINED)

    async def run():
        server = ModelServer(reg, "cpu", reload_s=3600, fields=WORKER)
        await server.start()
        try:
            return server.loaded
        finally:
            await server.stop()

    assert asyncio.run(run()) is None  # the worker decides on rules, "model_unavailable" (streams/decider.py)
