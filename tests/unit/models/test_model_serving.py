"""Registry, micro-batching and hot reload of the served model (real torch, real files)."""

from __future__ import annotations

import asyncio
import json

import pytest
import torch

from fraudgraph.models.batch import ScoringRequest
from fraudgraph.models.hetero import FRAUD_RELATIONS, random_fraud_graph
from fraudgraph.models.incremental import neighbour_states, states_from_graph
from fraudgraph.models.registry import ModelRegistry, RegistryError, card_for
from fraudgraph.models.rgcn import HeteroRGCN
from fraudgraph.models.serving import LoadedModel, ModelServer

GRAPH = random_fraud_graph(120, seed=11)
WIDTHS = {t: GRAPH.x[t].size(1) for t in GRAPH.node_types}
STATES = states_from_graph(GRAPH)
TX = list(range(GRAPH.offsets["Transaction"], GRAPH.num_nodes))
REQUESTS = [ScoringRequest(STATES[v], neighbour_states(GRAPH, STATES, v)) for v in TX]


def model(seed: int) -> HeteroRGCN:
    torch.manual_seed(seed)
    return HeteroRGCN(WIDTHS, FRAUD_RELATIONS, hidden=8, out_channels=1, num_bases=2).eval()


def register(reg: ModelRegistry, seed: int, make_current=True):
    return reg.register(model(seed), card_for(model(seed), threshold=0.5, target_fpr=0.01), make_current)


def offline(version_seed: int) -> list[float]:
    card = {"version": "x", **card_for(model(version_seed), threshold=0.5, target_fpr=0.01)}
    from fraudgraph.models.registry import ModelCard

    return [o.score for o in LoadedModel(model(version_seed), ModelCard(**card), torch.device("cpu")).infer(REQUESTS)]


def test_registry_round_trip_and_refusals(tmp_path):
    reg = ModelRegistry(tmp_path)
    assert reg.current_version() is None and reg.versions() == []
    card = register(reg, 1)
    assert reg.current_version() == card.version and reg.versions() == [card.version]
    loaded, loaded_card = reg.load(card.version)
    assert loaded_card == card
    want = model(1).state_dict()
    assert all(torch.equal(v, want[k]) for k, v in loaded.state_dict().items())
    assert loaded.node_types == model(1).node_types  # global node numbering follows this order
    with pytest.raises(RegistryError, match="no model version"):
        reg.promote("rgcn-nope")
    # a checkpoint trained on another feature encoding is refused, not silently mis-read
    path = tmp_path / card.version / "card.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "feature_spec": "v0"}))
    with pytest.raises(RegistryError, match="trained on features 'v0'"):
        reg.load(card.version)


def test_concurrent_requests_are_batched_and_answered_in_order(tmp_path):
    reg = ModelRegistry(tmp_path)
    register(reg, 1)
    sizes = []

    async def run():
        server = ModelServer(reg, "cpu", max_batch=64, max_delay_s=0.01, observe=lambda n, s, d: sizes.append((n, d)))
        await server.start()
        try:
            # many coroutines, one request each, all at once
            return await asyncio.gather(*(server.score([r]) for r in REQUESTS))
        finally:
            await server.stop()

    results = asyncio.run(run())
    want = offline(1)
    assert [r[0].score for r in results] == pytest.approx(want, rel=1e-6, abs=1e-7)
    assert sum(n for n, _ in sizes) == len(REQUESTS)
    assert max(n for n, _ in sizes) > 1 and max(n for n, _ in sizes) <= 64  # batched, bounded
    assert {d for _, d in sizes} == {"cpu"}
    assert all(r[0].shares for r in results)  # every transaction has relation shares to explain it


def test_hot_reload_under_concurrent_scoring_loses_nothing(tmp_path):
    reg = ModelRegistry(tmp_path)
    v1 = register(reg, 1)
    want = {1: offline(1), 2: offline(2)}
    answered: list[tuple[int, str, float]] = []

    async def client(server, i):
        for _ in range(30):
            out = (await server.score([REQUESTS[i]]))[0]
            answered.append((i, out.version, out.score))
            await asyncio.sleep(0)

    async def run():
        server = ModelServer(reg, "cpu", max_batch=16, max_delay_s=0.0, reload_s=3600)
        await server.start()
        clients = [asyncio.create_task(client(server, i)) for i in range(len(REQUESTS))]
        await asyncio.sleep(0.05)
        v2 = register(reg, 2)
        assert await server.check_for_new_version()
        await asyncio.gather(*clients)
        await server.stop()
        return v2

    v2 = asyncio.run(run())
    assert len(answered) == 30 * len(REQUESTS)  # nothing dropped
    seeds = {v1.version: 1, v2.version: 2}
    assert {v for _, v, _ in answered} == {v1.version, v2.version}
    for i, version, score in answered:  # each score is exactly what its recorded version computes
        assert score == pytest.approx(want[seeds[version]][i], rel=1e-6, abs=1e-7)
    first_v2 = next(k for k, (_, v, _) in enumerate(answered) if v == v2.version)
    assert all(v == v2.version for _, v, _ in answered[first_v2:])  # no going back once swapped


def test_a_broken_version_is_skipped_and_the_old_one_keeps_serving(tmp_path):
    reg = ModelRegistry(tmp_path)
    v1 = register(reg, 1)
    v2 = register(reg, 2)
    (tmp_path / v2.version / "model.pt").write_bytes(b"not a checkpoint")
    reg.promote(v1.version)

    async def run():
        server = ModelServer(reg, "cpu", reload_s=3600)
        await server.start()
        reg.promote(v2.version)
        swapped = await server.check_for_new_version()
        out = await server.score(REQUESTS[:3])
        await server.stop()
        return swapped, out

    swapped, out = asyncio.run(run())
    assert not swapped and {o.version for o in out} == {v1.version}


def test_inference_does_not_block_the_event_loop(tmp_path):
    reg = ModelRegistry(tmp_path)
    register(reg, 1)
    big = REQUESTS * 40  # one batch long enough to notice

    async def run():
        server = ModelServer(reg, "cpu", max_batch=len(big), max_delay_s=0.0)
        await server.start()
        ticks = 0
        scoring = asyncio.create_task(server.score(big))
        while not scoring.done():
            await asyncio.sleep(0.001)
            ticks += 1
        await server.stop()
        return ticks, len(scoring.result())

    ticks, n = asyncio.run(run())
    assert n == len(big) and ticks >= 3  # the loop kept running while the batch was inferred


def test_no_model_means_lookup_error(tmp_path):
    async def run():
        server = ModelServer(ModelRegistry(tmp_path), "cpu")
        await server.start()
        try:
            await server.score(REQUESTS[:1])
        finally:
            await server.stop()

    with pytest.raises(LookupError):
        asyncio.run(run())


def test_cpu_serving_runs_on_the_threads_it_is_given(tmp_path):
    """``model_threads``: torch's default (a thread per core) makes the small serving matmuls wait
    on each other and on the event loop's core (performance.md, "The model on")."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        ModelServer(ModelRegistry(tmp_path), "cpu", threads=1)
        assert torch.get_num_threads() == 1
        ModelServer(ModelRegistry(tmp_path), "cpu", threads=0)  # 0: left as it is
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run on the GPU machine)")
def test_cuda_and_cpu_give_the_same_scores(tmp_path):
    reg = ModelRegistry(tmp_path)
    card = register(reg, 3)
    cpu = LoadedModel(*reg.load(card.version, "cpu"), torch.device("cpu")).infer(REQUESTS)
    gpu = LoadedModel(*reg.load(card.version, "cuda"), torch.device("cuda")).infer(REQUESTS)
    assert [g.logit for g in gpu] == pytest.approx([c.logit for c in cpu], rel=1e-5, abs=1e-5)
