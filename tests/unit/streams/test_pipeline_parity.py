"""The invariant: the same events, in any arrival order Kafka can produce, give the same decisions
as the offline replay. The pipeline runs in process over a simulator log with fraud patterns and
delayed reports, split into partitions as Kafka would hold it, delivered in many orders."""

from __future__ import annotations

import asyncio
import random

import pytest
import torch

from fraudgraph.connectors.mapping import load_mapping
from fraudgraph.models import features as fx
from fraudgraph.models.hetero import FRAUD_RELATIONS
from fraudgraph.models.registry import ModelRegistry, card_for
from fraudgraph.models.rgcn import HeteroRGCN
from fraudgraph.models.serving import ModelServer
from fraudgraph.settings import Settings
from fraudgraph.stack.simulator.config import SimConfig
from fraudgraph.streams.decider import Decider
from fraudgraph.streams.event_time import EventTimeMerger
from fraudgraph.streams.node_states import NodeStates
from fraudgraph.streams.pipeline import Pipeline, Record
from fraudgraph.streams.policy import PolicySource
from fraudgraph.streams.state import NodeState
from fraudgraph.streams.testing import MemorySinks, deliver, interleaved, partitioned, replay_decisions
from fraudgraph.training.replay import simulator_records

SETTINGS = Settings()
SIM = SimConfig(customers=40, duration_s=8 * 3600, fraud_rate=0.06, seed=3, report_delay_s=(600, 4 * 3600))
LOGS = partitioned(simulator_records(SIM, SETTINGS))
LOG = [r for log in LOGS.values() for r in log]


def is_table(record: Record, table: str) -> bool:
    return record.topic.endswith(f".{table}")


class Score(float):
    """Equal within float tolerance: a model batch's composition moves float32 results by ~1e-7."""

    def __eq__(self, other) -> bool:
        return abs(self - other) <= 1e-5

    __hash__ = float.__hash__


def essence(scored) -> tuple:
    return (
        scored.decision,
        Score(scored.score),
        [r["code"] for r in scored.reasons],
        scored.model_version,
        scored.state_versions,
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = HeteroRGCN(dict(fx.FEATURE_WIDTHS), FRAUD_RELATIONS, hidden=8, out_channels=1, num_bases=2).eval()
    path = tmp_path_factory.mktemp("models")
    ModelRegistry(path).register(model, card_for(model, threshold=0.5, target_fpr=0.01))
    return path


async def with_decider(model_dir, work):
    server = ModelServer(ModelRegistry(model_dir), "cpu", max_batch=512, max_delay_s=0.001, reload_s=3600)
    await server.start()
    try:
        return await work(Decider(server, PolicySource(None)))
    finally:
        await server.stop()


async def live(decider: Decider, arrivals: list[Record], max_wait_ms: float = 1e12) -> MemorySinks:
    sinks = MemorySinks()
    pipeline = Pipeline(
        load_mapping(None),
        SETTINGS.decimal_handling_mode,
        NodeStates(),
        decider,
        sinks,
        EventTimeMerger(max_idle_ms=0, max_wait_ms=max_wait_ms),
        sinks.score_of,
    )
    await deliver(pipeline, arrivals)
    return sinks


class CopyingStore:
    """Node states as JSON bytes, so every ``get`` is a copy: a snapshot never changes after."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> NodeState | None:
        raw = self.data.get(key)
        return None if raw is None else NodeState.from_json(raw)

    def put(self, state: NodeState) -> None:
        self.data[state.key] = state.to_json()


async def one_at_a_time(decider: Decider) -> dict[int, object]:
    """The replay without the pipeline: the log sorted by event time, each event applied to states
    the store copies on every read, each transaction decided alone right after its own event. The
    pipeline (merge, write-back cache, batches) must decide exactly as this does."""
    from fraudgraph.connectors.events import TransactionCreated
    from fraudgraph.streams.scoring import ScoringInput, scored_record
    from fraudgraph.streams.state import Source, apply_event
    from fraudgraph.training.replay import decoded, event_time_order

    store, out = CopyingStore(), {}
    records = [(r.topic, r.key, r.value) for r in LOG]
    for i, event in enumerate(event_time_order(decoded(records, SETTINGS))):
        applied = apply_event(event, Source("replay", 0, i, 0), store)
        if isinstance(event, TransactionCreated) and event.transaction_id not in out:
            inp = ScoringInput(event, Source("replay", 0, i, 0), {st.key: st for st in applied.touched})
            [d] = await decider.decide([inp])
            out[event.transaction_id] = scored_record(inp, d.verdict, d.model_version, {})
    return out


def orders() -> dict[str, list[Record]]:
    skewed = max((s for s in LOGS if s[0].endswith(".transactions")), key=lambda s: len(LOGS[s]))
    out = {f"interleaved-{seed}": interleaved(LOGS, random.Random(seed)) for seed in range(4)}
    out["reports-first"] = [r for r in LOG if is_table(r, "fraud_reports")] + interleaved(
        {s: v for s, v in LOGS.items() if not s[0].endswith(".fraud_reports")}, random.Random(9)
    )
    out["one-partition-ahead"] = LOGS[skewed] + interleaved(
        {s: v for s, v in LOGS.items() if s != skewed}, random.Random(7)
    )
    out["fine-grained"] = interleaved(LOGS, random.Random(5), max_chunk=1)
    return out


def test_every_arrival_order_decides_as_the_offline_replay(model_dir):
    async def run(decider):
        offline = await replay_decisions(LOG, SETTINGS, decider)
        reference = await one_at_a_time(decider)
        results = {name: await live(decider, arrivals) for name, arrivals in orders().items()}
        return offline, reference, results

    offline, reference, results = asyncio.run(with_decider(model_dir, run))
    assert {t: essence(s) for t, s in offline.items()} == {t: essence(s) for t, s in reference.items()}
    transactions = sum(len(v) for s, v in LOGS.items() if s[0].endswith(".transactions"))
    assert len(offline) > 300 and transactions >= len(offline)
    alerted = [s for s in offline.values() if s.decision != "approve"]
    assert alerted and any(r["code"] == "fraud_proximity" for s in alerted for r in s.reasons)
    for name, sinks in results.items():
        assert sinks.emitted == len(offline), name  # one decision per transaction, none twice
        assert len(sinks.completed) == len(LOG), name  # every record done (its offset may be committed)
        live_scores = {s.transaction_id: essence(s) for s in sinks.scores.values()}
        differing = [t for t, s in offline.items() if live_scores.get(t) != essence(s)]
        assert not differing, f"{name}: {len(differing)} of {len(offline)} decided unlike the replay"


def test_applying_in_arrival_order_would_not_be_parity(model_dir):
    """The same check fails without the merge (every event released as it arrives): reports read
    before their transactions, and one partition hours ahead, change decisions."""

    async def run(decider):
        offline = await replay_decisions(LOG, SETTINGS, decider)
        naive = await live(decider, orders()["reports-first"], max_wait_ms=0)
        return offline, naive

    offline, naive = asyncio.run(with_decider(model_dir, run))
    differing = [t for t, s in offline.items() if essence(naive.scores[str(t).encode()]) != essence(s)]
    assert len(differing) > 10


class Crash(Exception):
    pass


class CrashingSinks(MemorySinks):
    """Dies in the ``at``-th ``sync`` that has scores to sync: that batch's scores are durable,
    its node states not. The worker commits both in one transaction, so it never stops there; the
    pipeline must decide the same even from this harder point."""

    def __init__(self, at: int):
        super().__init__()
        self.at, self.calls, self.synced = at, 0, 0

    async def sync(self) -> None:
        if self.emitted > self.synced:
            self.calls += 1
            self.synced = self.emitted
            if self.calls == self.at:
                raise Crash


def test_a_crash_after_the_scores_and_before_the_states_changes_no_decision(model_dir):
    rng = random.Random(4)
    arrivals = interleaved(LOGS, rng)

    async def run(decider):
        offline = await replay_decisions(LOG, SETTINGS, decider)
        sinks = CrashingSinks(at=6)
        first = Pipeline(
            load_mapping(None),
            SETTINGS.decimal_handling_mode,
            NodeStates(),
            decider,
            sinks,
            EventTimeMerger(max_idle_ms=0, max_wait_ms=1e12),
            sinks.score_of,
        )
        with pytest.raises(Crash):
            await deliver(first, arrivals)
        scored_before = len(sinks.scores)
        # The restart: the cache and whatever waited for order are gone; each partition is
        # re-delivered from a committed offset at or before its first record not done.
        done = {(r.topic, r.partition, r.offset) for r in sinks.completed}
        again = []
        for log in LOGS.values():
            first_not_done = next(
                (i for i, r in enumerate(log) if (r.topic, r.partition, r.offset) not in done), len(log)
            )
            again += log[max(0, first_not_done - rng.randint(0, 30)) :]
        second_sinks = MemorySinks(scores=dict(sinks.scores), saved=dict(sinks.saved))
        restored = NodeStates()  # from the changelog, which survives the crash as the scores do
        restored.restore(sinks.saved.items())
        second = Pipeline(
            load_mapping(None),
            SETTINGS.decimal_handling_mode,
            restored,
            decider,
            second_sinks,
            EventTimeMerger(max_idle_ms=0, max_wait_ms=1e12),
            second_sinks.score_of,
        )
        await deliver(second, sorted(again, key=lambda r: (r.topic, r.partition, r.offset)))
        return offline, scored_before, second_sinks

    offline, scored_before, sinks = asyncio.run(with_decider(model_dir, run))
    assert 0 < scored_before < len(offline)
    assert scored_before + sinks.emitted == len(sinks.scores) == len(offline)  # none lost, none twice
    differing = [t for t, s in offline.items() if essence(sinks.scores[str(t).encode()]) != essence(s)]
    assert not differing, f"{len(differing)} of {len(offline)} decided unlike the replay after the crash"


def test_records_given_back_at_a_rebalance_are_applied_when_they_come_again(model_dir):
    """A rebalance gives back what waited for order (``Pipeline.reset``). Should the client then
    hand over records after them before its seek brings them again, they are new to the pipeline,
    not copies: each record
    is done and each transaction decided, once."""
    rng = random.Random(8)
    streams = sorted(LOGS)
    held = max((s for s in streams if s[0].endswith(".transactions")), key=lambda s: len(LOGS[s]))

    async def run(decider):
        offline = await replay_decisions(LOG, SETTINGS, decider)
        sinks = MemorySinks()
        pipeline = Pipeline(
            load_mapping(None),
            SETTINGS.decimal_handling_mode,
            NodeStates(),
            decider,
            sinks,
            EventTimeMerger(max_idle_ms=0, max_wait_ms=1e12),
            sinks.score_of,
        )
        pipeline.order.assign(streams, pipeline.now_ms())
        # Before the rebalance: a first half of every partition but one, which is behind (lag
        # unknown), so everything waits for it.
        fetched = {s: len(LOGS[s]) // 2 for s in streams if s != held}
        for s, n in fetched.items():
            for r in LOGS[s][:n]:
                pipeline.push(r)
        assert await pipeline.drain(lambda s: None) == 0
        assert len(pipeline.reset()) == sum(fetched.values())
        ahead = {s: LOGS[s][n : n + rng.randint(1, 20)] for s, n in fetched.items()}
        arrivals = interleaved(ahead, rng) + interleaved(LOGS, rng)  # then the seek to offset 0
        await deliver(pipeline, arrivals)
        return offline, sinks, arrivals

    offline, sinks, arrivals = asyncio.run(with_decider(model_dir, run))
    assert len(sinks.completed) == len(arrivals)
    assert {(r.stream, r.offset) for r in sinks.completed} == {(r.stream, r.offset) for r in LOG}
    assert sinks.emitted == len(offline) and sinks.scores.keys() == {str(t).encode() for t in offline}
