"""The records of scoring: what a decision is made from, and what is published about it.

The worker builds a ``ScoringInput`` per new transaction (the states of the transaction and of its
direct neighbours, read right after the transaction was linked in); ``model_request`` turns it into
the R-GCN's request, the rules read it directly (``streams/rules.py``), and the policy's
``Verdict`` becomes the ``TransactionScored`` record on ``fraud.scores``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from fraudgraph.connectors.events import EntityId, TransactionCreated
from fraudgraph.models.batch import ScoringRequest
from fraudgraph.models.features import FEATURE_SPEC
from fraudgraph.streams.state import NodeState, Source, node_key

APPROVE, REVIEW, BLOCK = "approve", "review", "block"


@dataclass(frozen=True)
class Reason:
    code: str  # stable, machine-readable (e.g. "amount_anomaly")
    detail: str  # for the analyst


@dataclass
class ScoringInput:
    transaction: TransactionCreated
    source: Source
    states: dict[str, NodeState]  # node key -> state, the transaction's own included

    def state(self, node_type: str, ident: Any) -> NodeState | None:
        return None if ident is None else self.states.get(node_key(node_type, ident))


@dataclass
class ModelOpinion:
    """What the model says about one transaction, before any policy is applied."""

    score: float  # probability-like, 0..1
    version: str
    reasons: list[Reason]  # its top contributing relations/features, most important first


@dataclass
class Verdict:
    score: float  # probability-like, 0..1
    decision: str
    reasons: list[Reason]
    policy_version: str = ""  # the decision policy that made it (empty: no policy, e.g. the placeholder)


@dataclass
class TransactionScored:
    """The record published to ``fraud.scores`` (and ``fraud.alerts`` unless approved)."""

    transaction_id: int
    account_id: EntityId
    score: float
    decision: str
    reasons: list[dict[str, str]]
    model_version: str
    feature_spec: str
    state_versions: dict[str, int]  # node key -> NodeState.version read when scoring
    source: dict[str, Any]  # topic, partition, offset, lsn, ts_ms, snapshot
    timings: dict[str, float] = field(default_factory=dict)  # cdc_append_ms, decided_ms, state_ms, score_ms
    policy_version: str = ""  # Verdict.policy_version: which policy file decided


def scored_record(
    inp: ScoringInput, verdict: Verdict, model_version: str, timings: dict[str, float]
) -> TransactionScored:
    t, pos = inp.transaction, inp.transaction.position
    return TransactionScored(
        transaction_id=t.transaction_id,
        account_id=t.account_id,
        score=round(verdict.score, 6),
        decision=verdict.decision,
        reasons=[asdict(r) for r in verdict.reasons],
        model_version=model_version,
        feature_spec=FEATURE_SPEC,
        state_versions={k: s.version for k, s in inp.states.items()},
        source={
            "topic": inp.source.topic,
            "partition": inp.source.partition,
            "offset": inp.source.offset,
            "lsn": pos.lsn,
            "ts_ms": pos.ts_ms,
            "snapshot": pos.snapshot,
        },
        timings=timings,
        policy_version=verdict.policy_version,
    )


def model_request(inp: ScoringInput) -> ScoringRequest:
    """The transaction's R-GCN request: its own state and, per relation into it, its senders'
    states, as ``apply_event`` linked them (``_apply_transaction``). A self-transfer lists the
    one account under both INITIATED and TRANSFER_TO, as the full graph has both edges."""
    t = inp.transaction
    senders = {
        "Account:INITIATED:Transaction": inp.state("Account", t.account_id),
        "Merchant:rev_PAYS:Transaction": inp.state("Merchant", t.merchant_id),
        "Account:rev_TRANSFER_TO:Transaction": inp.state("Account", t.counterparty_account_id),
        "Device:rev_USING_DEVICE:Transaction": inp.state("Device", t.device_id),
        "IP:rev_FROM_IP:Transaction": inp.state("IP", t.ip),
    }
    return ScoringRequest(
        inp.states[node_key("Transaction", t.transaction_id)],  # always among them
        {key: [state] for key, state in senders.items() if state is not None},
    )
