"""Point-in-time link-prediction examples: the CDC log replayed through the worker's state code,
each merchant payment snapshotted with its account's state as it was *just before* the payment.

Why before, when the fraud replay (``replay.py``) snapshots right after: the fraud model scores a
transaction that has happened; the recommender predicts a payment that has not, so the account's
input must not contain the payment it is asked to predict. Everything else is as in ``replay.py``:
the same ``apply_event``, so the account's history (``NodeState.merchants``) and feature sums are
exactly what the worker will hold when it answers a query.

``snapshot_at_ms`` also freezes every account's input and every merchant's mean payment features
at that moment: the "history up to the cut" of a time-split evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from fraudgraph.connectors import events as ev
from fraudgraph.models import features as fx
from fraudgraph.models.recommend import PAID, UserInput, account_input, merchant_means
from fraudgraph.streams.state import NodeState, Source, apply_event, node_key
from fraudgraph.training.replay import FRAUD_KINDS


@dataclass
class Payment:
    transaction_id: int
    ts_ms: int
    account_id: ev.EntityId
    merchant_id: ev.EntityId
    user: UserInput  # the account's input just before this payment


@dataclass
class RecsReplay:
    payments: list[Payment] = field(default_factory=list)
    labels: dict[int, int] = field(default_factory=dict)  # transaction id -> 1 fraud, 0 cleared
    states: dict[str, NodeState] = field(default_factory=dict)  # every node at the log's end
    merchants: list[ev.EntityId] = field(default_factory=list)  # in first-seen order
    accounts_at: dict[ev.EntityId, UserInput] = field(default_factory=dict)  # at snapshot_at_ms
    merchant_means_at: dict[ev.EntityId, list[float] | None] = field(default_factory=dict)  # at snapshot_at_ms

    def fraud(self, transaction_id: int) -> bool:
        return self.labels.get(transaction_id, 0) == 1


class _Store(dict):
    def put(self, state: NodeState) -> None:
        self[state.key] = state


def new_account_input() -> UserInput:
    """An account the log has not shown yet: default features, no history."""
    return UserInput(fx.account_features(None), {PAID: {}}, {})


def recs_replay(events: Iterable[ev.DomainEvent], snapshot_at_ms: int | None = None) -> RecsReplay:
    """Apply ``events`` (in event-time order); snapshot each merchant payment's account first."""
    store, out = _Store(), RecsReplay()
    seen: set[ev.EntityId] = set()
    ids: dict[str, ev.EntityId] = {}  # node key -> the id events name it by (an integer or a text key)
    snapshot_due = snapshot_at_ms  # None once taken (or when none is asked for)

    def snapshot() -> None:
        for state in store.values():
            ident = ids.get(state.key)
            if ident is None:
                continue
            if state.node_type == "Account":
                out.accounts_at[ident] = account_input(state)
            elif state.node_type == "Merchant":
                out.merchant_means_at[ident] = merchant_means(state)

    for offset, event in enumerate(events):
        for node_type, ident in (
            ("Account", getattr(event, "account_id", None)),
            ("Merchant", getattr(event, "merchant_id", None)),
        ):
            if ident is not None:
                ids[node_key(node_type, ident)] = ident
        if snapshot_due is not None and event.position.ts_ms >= snapshot_due:
            snapshot()
            snapshot_due = None
        if isinstance(event, ev.TransactionCreated) and event.merchant_id is not None:
            account = store.get(node_key("Account", event.account_id))
            user = account_input(account) if account is not None else new_account_input()
            out.payments.append(
                Payment(event.transaction_id, event.position.ts_ms, event.account_id, event.merchant_id, user)
            )
        if isinstance(event, (ev.TransactionCreated, ev.MerchantUpserted)):
            mid = event.merchant_id
            if mid is not None and mid not in seen:
                seen.add(mid)
                out.merchants.append(mid)
        if isinstance(event, ev.FraudReported):
            out.labels[event.transaction_id] = int(event.kind in FRAUD_KINDS)
        apply_event(event, Source("replay", 0, offset, event.position.ts_ms), store)
    if snapshot_due is not None:
        snapshot()
    out.states = dict(store)
    return out
