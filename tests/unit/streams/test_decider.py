"""The Decider: the model (on the server's inference thread) and the rules (on the event loop) run
at the same time for a batch, measured by wall clock rather than assumed; and a missing or failing
model never leaves a transaction undecided."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
import torch

from fraudgraph.models import features as fx
from fraudgraph.models.hetero import FRAUD_RELATIONS
from fraudgraph.models.registry import ModelRegistry, card_for
from fraudgraph.models.rgcn import HeteroRGCN
from fraudgraph.models.serving import LoadedModel, ModelServer
from fraudgraph.settings import load_settings
from fraudgraph.stack.simulator.config import SimConfig
from fraudgraph.streams import decider as decider_module
from fraudgraph.streams.decider import NO_MODEL, Decider
from fraudgraph.streams.decision import MODEL_UNAVAILABLE
from fraudgraph.streams.policy import PolicySource
from fraudgraph.streams.scoring import ScoringInput
from fraudgraph.streams.state import Source, apply_event
from fraudgraph.training.replay import _LiveStore, decoded, event_time_order, simulator_records


def simulated_inputs(n: int) -> list[ScoringInput]:
    """The last ``n`` transactions of a small simulated run, as the worker would hold them: the
    simulator's rows through the Debezium envelope, the decoder and ``apply_event``."""
    config = SimConfig(
        customers=300,
        duration_s=3 * 3600,
        start=datetime(2026, 11, 1, tzinfo=UTC),
        fraud_rate=0.1,
        seed=7,
        id_base=10**12,
    )
    settings = load_settings()
    store, inputs = _LiveStore(), []
    for offset, event in enumerate(event_time_order(decoded(simulator_records(config, settings), settings))):
        source = Source("sim", 0, offset, event.position.ts_ms)
        applied = apply_event(event, source, store)
        if applied.transaction is not None and not applied.replayed:
            inputs.append(ScoringInput(applied.transaction, source, {s.key: s for s in applied.touched}))
    assert len(inputs) >= n
    return inputs[-n:]


INPUTS = simulated_inputs(256)


def register_model(model_dir) -> str:
    torch.manual_seed(0)
    model = HeteroRGCN(dict(fx.FEATURE_WIDTHS), FRAUD_RELATIONS, hidden=64, out_channels=1, num_bases=2).eval()
    return ModelRegistry(model_dir).register(model, card_for(model, threshold=0.5, target_fpr=0.01)).version


def run_with_server(registry_dir, body):
    async def main():
        server = ModelServer(ModelRegistry(registry_dir), device="cpu", reload_s=3600)
        await server.start()
        try:
            return await body(Decider(server, PolicySource()))
        finally:
            await server.stop()

    return asyncio.run(main())


def test_rules_and_model_overlap_in_time(tmp_path, monkeypatch):
    """Every batch's rule evaluation (event loop) and model inference (server thread) intervals
    intersect. Several batches in a row: from the second on the server lingers for more requests
    (its previous batch was large), which is when rules that merely yield a few times first ran
    entirely before the model started."""
    version = register_model(tmp_path)
    model_spans, rule_calls = [], []
    infer, evaluate_rules = LoadedModel.infer, decider_module.evaluate_rules

    def timed_infer(self, requests):
        started = time.perf_counter()
        try:
            return infer(self, requests)
        finally:
            model_spans.append((started, time.perf_counter(), len(requests)))

    def timed_rules(inp, policy, *unmapped):
        started = time.perf_counter()
        # Rules of real weight (0.2 ms each, GIL released): with only the few ms the test inputs
        # take, the inference thread may not get the GIL before the rules end, which says nothing
        # about the order in which the decider starts them. A blocking sleep still holds the event
        # loop, so a server that has not yet handed the batch over cannot do so meanwhile.
        time.sleep(0.0002)
        try:
            return evaluate_rules(inp, policy, *unmapped)
        finally:
            rule_calls.append((started, time.perf_counter()))

    monkeypatch.setattr(LoadedModel, "infer", timed_infer)
    monkeypatch.setattr(decider_module, "evaluate_rules", timed_rules)

    async def body(decider):
        batches = []
        for _ in range(4):
            model_spans.clear(), rule_calls.clear()
            decided = await decider.decide(INPUTS)
            assert [d.model_version for d in decided] == [version] * len(INPUTS)
            assert len(rule_calls) == len(INPUTS) and [n for *_, n in model_spans] == [len(INPUTS)]
            batches.append(((rule_calls[0][0], rule_calls[-1][1]), model_spans[0][:2]))
        return batches

    for (r0, r1), (m0, m1) in run_with_server(tmp_path, body):
        assert m0 < r1 and r0 < m1, f"sequential: rules {r0:.4f}..{r1:.4f}, model {m0:.4f}..{m1:.4f}"


def test_no_model_registered_decides_on_rules_with_reason(tmp_path):
    """An empty registry: every transaction still gets a verdict, saying the model gave no opinion."""
    decided = run_with_server(tmp_path, lambda decider: decider.decide(INPUTS[:32]))
    assert len(decided) == 32
    for d in decided:
        assert d.model_version == NO_MODEL and d.verdict.score == 0.0
        assert d.verdict.decision in {"approve", "review", "block"}
        assert MODEL_UNAVAILABLE in [r.code for r in d.verdict.reasons]


def test_model_failure_decides_on_rules_with_reason(tmp_path, monkeypatch, caplog):
    """A model that raises on every request: the batch is decided on rules alone, logged, not dropped."""
    register_model(tmp_path)

    async def body(decider):
        assert decider.server.loaded is not None  # the model is there, it fails at inference
        monkeypatch.setattr(
            LoadedModel, "infer", lambda self, requests: (_ for _ in ()).throw(RuntimeError("CUDA on fire"))
        )
        return await decider.decide(INPUTS[:16])

    decided = run_with_server(tmp_path, body)
    assert len(decided) == 16
    for d in decided:
        assert d.model_version == NO_MODEL
        assert MODEL_UNAVAILABLE in [r.code for r in d.verdict.reasons]
    assert "CUDA on fire" in caplog.text


@pytest.fixture(autouse=True)
def _quiet_torch_threads():
    """One torch thread, as on a small worker box: the overlap must not depend on spare cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
