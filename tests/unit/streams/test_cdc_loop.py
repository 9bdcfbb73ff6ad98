"""The CDC loop's outputs: what goes into one Kafka transaction (the broker side is tested in
tests/integration: SIGKILL, two workers, broker restart)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import orjson

from fraudgraph.settings import Settings
from fraudgraph.streams.cdc_loop import TransactionalOutputs
from fraudgraph.streams.pipeline import Record
from fraudgraph.streams.scoring import TransactionScored
from fraudgraph.streams.state import NodeState

SETTINGS = Settings(worker_id="w", scores_topic="scores", alerts_topic="alerts", dead_letter_topic="dlq")


class Producer:
    def __init__(self) -> None:
        self.transactions = 0
        self.sent: list[tuple[str, bytes | None, dict]] = []

    def begin_transaction(self) -> None:
        self.transactions += 1

    def produce(self, topic, value, key, **kwargs) -> None:
        self.sent.append((topic, key, kwargs))


def scored(transaction_id: int, decision: str) -> TransactionScored:
    return TransactionScored(
        transaction_id=transaction_id,
        account_id=7,
        score=0.9,
        decision=decision,
        reasons=[],
        model_version="none",
        feature_spec="",
        state_versions={},
        source={},
        timings={"cdc_append_ms": 0},
    )


def test_one_checkpoint_is_one_transaction_with_alerts_scores_states_and_offsets():
    producer, scores = Producer(), {}
    out = TransactionalOutputs(producer, SETTINGS, scores)  # type: ignore[arg-type]
    record = Record("bank.public.transactions", 3, 41, b"k", b"v", 0)

    async def run() -> None:
        await out.emit(record, scored(1, "review"))
        await out.emit(replace(record, offset=42), scored(2, "approve"))
        await out.save([NodeState("Account", "Account:7", [1.0])])
        await out.dead_letter(replace(record, offset=43), "not_json", "bad")

    asyncio.run(run())
    for offset in (41, 42, 43):
        out.done(replace(record, offset=offset))
    assert producer.transactions == 1 and out.in_transaction
    assert [(t, k) for t, k, _ in producer.sent] == [
        ("alerts", b"1"),  # a review decision is an alert too
        ("scores", b"1"),
        ("scores", b"2"),
        ("w-node-state-changelog", b"Account:7"),
        ("dlq", b"k"),
    ]
    assert [kw.get("partition") for t, _, kw in producer.sent if t == "scores"] == [3, 3]  # its CDC partition
    assert orjson.loads(scores[b"2"])["decision"] == "approve"
    assert out.offsets == {("bank.public.transactions", 3): 44}  # the next offset to read
    out.committed()
    assert not out.in_transaction and out.offsets == {} and out.emitted == []
    asyncio.run(out.save([NodeState("Account", "Account:8", [1.0])]))
    assert producer.transactions == 2  # the next record opens the next transaction
