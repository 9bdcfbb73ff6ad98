"""Versioned, incremental state per graph node, and the pure function that applies one event to it.

Each node (customer, account, merchant, device, IP, transaction) has one ``NodeState``: its own raw
features, the per-relation neighbour sums exact R-GCN inference needs (``models/incremental.py``),
and O(1) running aggregates the rules read (amount moments, sliding-window velocity, distinct
counterparties). Applying an event touches a bounded number of nodes (a transaction: itself, its
account, merchant or counterparty, device and IP), so nothing here ever scans history.

Two versions, for two different questions
=========================================

* *Was this event already applied to this node?* ``NodeState.applied`` maps each input stream
  (``topic/partition``) to the highest offset applied from it. Kafka offsets grow strictly within a
  partition and a replay (a restart after a crash, a consumer-group reset) re-delivers the same
  offsets, so an event at or below the mark is a replay and is skipped, node by node. Why not the
  source LSN alone: one node hears from several topics and partitions whose interleaving is not LSN
  order, and concurrent source transactions commit out of LSN order, so "older LSN" does not mean
  "already seen" across streams. The map is bounded by the number of input partitions.
* *Is this row image newer than the one held?* ``NodeState.row_version`` is the LSN of the node's
  own source row last applied: an older image (the same row can only change in commit order, so its
  LSNs do grow) never overwrites a newer one. ``NodeState.version`` is the newest LSN that changed
  the node in any way; scores record it as the state version they read.

Nodes touched by one event are applied independently, so if a crash made some of them durable and
not others, the replay completes exactly the missing ones.

Neighbour sums hold a neighbour's features as they were when the edge was added (see
``models/incremental.py``); training replays build state through this same function, so the model
learns from what serving sees.

Unknown fields
==============

A field the bank's mapping leaves out, or a null in a row where the field may be unknown, arrives
as ``None`` (``connectors/mapping.py``: ``UNKNOWN_FIELDS``), and nothing here fills it in: a node's
attribute holds ``None`` (so a rule can tell "unknown" from "row not arrived yet", which leaves the
key absent), a feature takes the encoding's value for "missing" (``models/features.py``), and an
unknown device or IP gets no node and no link (one node for every unknown IP would link strangers).
``MODEL_INPUTS`` names the fields that reach a model's inputs here.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from fraudgraph.connectors import events as ev
from fraudgraph.models import features as fx
from fraudgraph.models.hetero import Relation
from fraudgraph.models.incremental import NeighbourSums
from fraudgraph.streams.aggregates import DistinctSketch, RecentSet, RunningMoments, SlidingCounter

RECENT_TRANSACTIONS = 20  # per account, for "latest scores of this account" queries
RECENT_PROFILE_CHANGES = 10
CUSTOMER_ACCOUNTS = 8  # accounts a customer's profile changes are copied to (a customer has a few)
MERCHANTS_PER_ACCOUNT = 64  # merchants an account's state remembers (recommendations)
# Labels that make a transaction's parties confirmed-fraud-adjacent; "false_positive" clears nothing
# and marks nothing (it says the transaction was fine).
FRAUD_LABELS = frozenset({"confirmed_fraud", "chargeback"})
# The event fields (``Event.field``, as connectors/mapping.py names them) that reach a model's inputs
# through ``apply_event``: the node features (models/features.py) and the links whose ends' features
# fill the neighbour sums; a required field stands for its table. A model's card lists those its
# training data provided (training/train.py), and a worker whose mapping lacks one refuses the model
# (models/serving.py). No other field changes a feature or a neighbour sum (tests/unit/streams/test_unknown_fields.py).
MODEL_INPUTS = frozenset(
    {
        "CustomerUpserted.customer_id",
        "CustomerUpserted.kyc_level",
        "AccountUpserted.account_id",
        "AccountUpserted.customer_id",
        "AccountUpserted.kind",
        "LoginRecorded.customer_id",
        "LoginRecorded.device_id",
        "LoginRecorded.ip",
        "TransactionRow.transaction_id",
        "TransactionRow.account_id",
        "TransactionRow.kind",
        "TransactionRow.amount",
        "TransactionRow.created_at",
        "TransactionRow.merchant_id",
        "TransactionRow.counterparty_account_id",
        "TransactionRow.device_id",
        "TransactionRow.ip",
    }
)


@dataclass(frozen=True, slots=True)
class Source:
    """Where an event was read: the replay guard's coordinates and the latency clock's start."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int  # the Kafka record's timestamp (append time of the CDC event)

    @property
    def stream(self) -> str:
        return f"{self.topic}/{self.partition}"


@dataclass
class NodeState:
    node_type: str  # the graph label: Customer, Account, Merchant, Device, IP, Transaction
    key: str
    features: list[float]
    neighbours: NeighbourSums = field(default_factory=NeighbourSums)
    version: int = 0
    row_version: int = 0
    applied: dict[str, int] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)
    deleted: bool = False
    # Aggregates of the node's transactions (accounts: sent; merchants, devices, IPs: seen).
    amounts: RunningMoments = field(default_factory=RunningMoments)
    last_minute: SlidingCounter = field(default_factory=lambda: SlidingCounter(60, 5))
    last_hour: SlidingCounter = field(default_factory=lambda: SlidingCounter(3600, 60))
    distinct: DistinctSketch = field(default_factory=DistinctSketch)  # accounts: counterparties; others: accounts
    recent: list[Any] = field(default_factory=list)  # accounts: recent transaction ids; customers: profile changes
    # What the decision rules read (``rules.py``), all bounded:
    # accounts: the devices and IPs it paid from ("device:<id>", "ip:<ip>"), first and last use;
    # devices and IPs: the accounts that paid ("account:<id>") and customers that logged in
    # ("customer:<id>") through them; merchants: payer accounts and their devices on card-not-present
    # payments (how concentrated its online payers are on few devices).
    peers: RecentSet = field(default_factory=RecentSet)
    senders: RecentSet = field(default_factory=RecentSet)  # accounts: accounts that transferred to it
    reported: RecentSet = field(default_factory=RecentSet)  # merchants: payers of its confirmed-fraud payments
    received: SlidingCounter = field(default_factory=lambda: SlidingCounter(86_400, 3_600))  # accounts: transfers in
    declines: SlidingCounter = field(default_factory=lambda: SlidingCounter(3_600, 300))  # accounts: declined payments
    # Named facts -> latest event time (ms): "fraud:<role>" (this node was the account, counterparty,
    # merchant, device or IP of a confirmed-fraud transaction), "profile:<field>" (accounts: their
    # owner changed that profile field).
    marks: dict[str, int] = field(default_factory=dict)
    fraud_reports: int = 0  # confirmed-fraud transactions through this node (merchants: their share)
    # Accounts: the merchants they paid, str(merchant id) -> [payments, last payment ms], at most
    # MERCHANTS_PER_ACCOUNT (the least recently paid is dropped): what the recommender's account
    # embedding is built from (``models/recommend.py``), so it follows the account's latest payments.
    merchants: dict[str, list[int]] = field(default_factory=dict)

    def to_json(self) -> bytes:
        """The state without the fields still at their defaults (``from_json`` restores them): most
        nodes are transactions, which use few of the aggregates, and a worker holds every restored
        state as these bytes until it reads it (an empty state is 666 bytes written whole, 60 sparse).
        Each aggregate is created only by its field's default factory, so an empty one *is* its
        default, window and capacity included."""
        d: dict[str, Any] = {"node_type": self.node_type, "key": self.key, "features": self.features}
        if self.neighbours.counts or self.neighbours.sums:
            d["neighbours"] = self.neighbours
        for name in (
            "version",
            "row_version",
            "applied",
            "attrs",
            "deleted",
            "recent",
            "marks",
            "fraud_reports",
            "merchants",
        ):
            value = getattr(self, name)
            if value:
                d[name] = value
        if self.amounts.count:
            d["amounts"] = self.amounts
        for name in ("last_minute", "last_hour", "received", "declines"):
            counter = getattr(self, name)
            if counter.buckets:
                d[name] = counter
        if self.distinct.hashes:
            d["distinct"] = self.distinct
        for name in ("peers", "senders", "reported"):
            recent_set = getattr(self, name)
            if recent_set.items:
                d[name] = recent_set
        return orjson.dumps(d)  # orjson writes the dataclasses natively

    def copy(self) -> NodeState:
        """A deep copy (a snapshot no later event can change), field by field: a JSON round trip
        costs several times more, and the hot path copies a node each time a batch touches it again.
        ``tests/unit/test_state.py`` checks it against ``from_json(to_json())``."""
        return NodeState(
            node_type=self.node_type,
            key=self.key,
            features=list(self.features),
            neighbours=self.neighbours.copy(),
            version=self.version,
            row_version=self.row_version,
            applied=dict(self.applied),
            attrs=_deep_copy(self.attrs),
            deleted=self.deleted,
            amounts=self.amounts.copy(),
            last_minute=self.last_minute.copy(),
            last_hour=self.last_hour.copy(),
            distinct=self.distinct.copy(),
            recent=_deep_copy(self.recent),
            peers=self.peers.copy(),
            senders=self.senders.copy(),
            reported=self.reported.copy(),
            received=self.received.copy(),
            declines=self.declines.copy(),
            marks=dict(self.marks),
            fraud_reports=self.fraud_reports,
            merchants={k: list(v) for k, v in self.merchants.items()},
        )

    @classmethod
    def from_json(cls, raw: bytes) -> NodeState:
        d = orjson.loads(raw)
        # Fields absent from a state written before they existed keep their defaults.
        for name, kind in _NESTED.items():
            if name in d:
                d[name] = kind(**d[name])
        return cls(**d)


def _deep_copy(value: Any) -> Any:
    """A copy of JSON-like data (dicts and lists of scalars, nested)."""
    if type(value) is dict:
        return {k: _deep_copy(v) for k, v in value.items()}
    if type(value) is list:
        return [_deep_copy(v) for v in value]
    return value


_NESTED = {
    "neighbours": NeighbourSums,
    "amounts": RunningMoments,
    "last_minute": SlidingCounter,
    "last_hour": SlidingCounter,
    "distinct": DistinctSketch,
    "peers": RecentSet,
    "senders": RecentSet,
    "reported": RecentSet,
    "received": SlidingCounter,
    "declines": SlidingCounter,
}


def node_key(node_type: str, ident: Any) -> str:
    return f"{node_type}:{ident}"


class StateReader(Protocol):
    """Read access to node states (a plain dict of them is one): all that answering a query needs."""

    def get(self, key: str, /) -> NodeState | None: ...


class StateStore(StateReader, Protocol):
    """Where node states live: a dict in unit tests, the changelog-backed Faust table in the worker."""

    def put(self, state: NodeState) -> None: ...


@dataclass
class Applied:
    """What applying one event did."""

    touched: list[NodeState] = field(default_factory=list)  # fresh and replayed, in touch order
    replayed: int = 0  # nodes that had already applied this event
    transaction: ev.TransactionCreated | None = None  # set when the event is a new transaction to score
    previous_label: str | None = None  # a fresh fraud report: the report kind it replaces, if any


class _Touch:
    """The nodes one event touches; each knows whether it still needs the event."""

    def __init__(self, store: StateStore, source: Source):
        self.store, self.source = store, source
        self.nodes: dict[str, tuple[NodeState, bool]] = {}

    def node(self, node_type: str, ident: Any, features: list[float]) -> tuple[NodeState, bool]:
        key = node_key(node_type, ident)
        if key not in self.nodes:
            state = self.store.get(key)
            if state is None:
                state = NodeState(node_type, key, features)
            fresh = state.applied.get(self.source.stream, -1) < self.source.offset
            self.nodes[key] = (state, fresh)
        return self.nodes[key]

    def commit(self, lsn: int) -> Applied:
        out = Applied()
        for state, fresh in self.nodes.values():
            out.touched.append(state)
            if fresh:
                state.applied[self.source.stream] = self.source.offset
                state.version = max(state.version, lsn)
                self.store.put(state)
            else:
                out.replayed += 1
        return out


def _link(src: tuple[NodeState, bool], dst: tuple[NodeState, bool], name: str) -> None:
    """Edge src -name-> dst: each end records the other's features, if it has not already."""
    (s, s_fresh), (d, d_fresh) = src, dst
    key, inverse_key = _relation_keys(s.node_type, name, d.node_type)
    if d_fresh:
        d.neighbours.add(key, s.features)
    if s_fresh:
        s.neighbours.add(inverse_key, d.features)


@functools.cache
def _relation_keys(src_type: str, name: str, dst_type: str) -> tuple[str, str]:
    rel = Relation(src_type, name, dst_type)
    return rel.key, rel.inverse().key


def _upsert_row(
    node: tuple[NodeState, bool], lsn: int, attrs: dict[str, Any], features: list[float] | None = None
) -> bool:
    state, fresh = node
    if not fresh or lsn <= state.row_version:
        return False
    state.row_version = lsn
    state.attrs.update(attrs)
    state.deleted = False
    if features is not None:
        state.features = features
    return True


_ENTITY_TYPES = {
    "customer": "Customer",
    "account": "Account",
    "merchant": "Merchant",
    "device": "Device",
    "transaction": "Transaction",
}


def apply_event(event: ev.DomainEvent, source: Source, store: StateStore) -> Applied:
    """Apply one decoded CDC event to the state of every node it touches (idempotent per node)."""
    lsn, ts = event.position.lsn, event.position.ts_ms
    touch = _Touch(store, source)
    one = fx.constant_features()
    transaction, previous_label = None, None

    if isinstance(event, ev.CustomerUpserted):
        _upsert_row(
            touch.node("Customer", event.customer_id, fx.customer_features(event.kyc_level)),
            lsn,
            {"country": event.country, "kyc_level": event.kyc_level},
            fx.customer_features(event.kyc_level),
        )
    elif isinstance(event, ev.AccountUpserted):
        account = touch.node("Account", event.account_id, fx.account_features(event.kind))
        new_owner = (
            _upsert_row(
                account,
                lsn,
                {
                    "kind": event.kind,
                    "status": event.status,
                    "currency": event.currency,
                    "opened_ms": _ms(event.opened_at),
                },
                fx.account_features(event.kind),
            )
            and "owner" not in account[0].attrs
        )
        if new_owner:
            account[0].attrs["owner"] = event.customer_id
        # Each end of the OWNS edge guards itself, not the account's row: after a crash the account's
        # write can be durable and its owner's not, and the replayed event must still reach the owner.
        if account[0].attrs.get("owner") == event.customer_id:
            customer = touch.node("Customer", event.customer_id, fx.customer_features(None))
            owned = customer[0].attrs.get("accounts", [])
            first_link = customer[1] and event.account_id not in owned
            _link((customer[0], first_link), (account[0], new_owner), "OWNS")
            if first_link:  # so the owner's profile changes reach the account (see ProfileChanged)
                customer[0].attrs["accounts"] = [*owned, event.account_id][-CUSTOMER_ACCOUNTS:]
            # And the changes the owner made before this account was linked: an account's marks
            # must not depend on whether the accounts or the profile-changes topic was read first.
            for ts_changed, changed in customer[0].recent:
                _mark(account, f"profile:{changed}", ts_changed)
    elif isinstance(event, ev.MerchantUpserted):
        _upsert_row(
            touch.node("Merchant", event.merchant_id, one),
            lsn,
            {"mcc": event.mcc, "country": event.country, "created_ms": _ms(event.created_at)},
        )
    elif isinstance(event, ev.DeviceUpserted):
        _upsert_row(touch.node("Device", event.device_id, one), lsn, {"os": event.os})
    elif isinstance(event, ev.EntityDeleted):
        node_type = _ENTITY_TYPES.get(event.entity)
        if node_type:
            state, fresh = touch.node(node_type, event.key, one)
            if fresh and lsn > state.row_version:
                state.row_version, state.deleted = lsn, True
    elif isinstance(event, ev.LoginRecorded):
        customer = touch.node("Customer", event.customer_id, fx.customer_features(None))
        if event.ip is not None:  # unknown: no IP node and no link, rather than one IP all such logins share
            ip = touch.node("IP", event.ip, one)
            _link(customer, ip, "LOGIN_FROM")
            _seen_by(ip, str(event.customer_id), ts)
            _peer(ip, f"customer:{event.customer_id}", ts)
        if event.device_id is not None:
            device = touch.node("Device", event.device_id, one)
            _link(customer, device, "LOGGED_IN")
            _seen_by(device, str(event.customer_id), ts)
            _peer(device, f"customer:{event.customer_id}", ts)
    elif isinstance(event, ev.ProfileChanged):
        customer_state, fresh = touch.node("Customer", event.customer_id, fx.customer_features(None))
        if fresh:
            customer_state.recent = [*customer_state.recent, [ts, event.field]][-RECENT_PROFILE_CHANGES:]
        # Copied onto the customer's accounts, whose states are what a transaction is scored with
        # (the customer's is not among them). On a replay of the customer only accounts still
        # without the mark are touched: one a crash left without it is completed, and one that got
        # it otherwise (linked after the change, see AccountUpserted) is not rewritten.
        name = f"profile:{event.field}"
        for account_id in customer_state.attrs.get("accounts", []):
            if not fresh:
                known = touch.store.get(node_key("Account", account_id))
                if known is not None and known.marks.get(name, -1) >= ts:
                    continue
            _mark(touch.node("Account", account_id, fx.account_features(None)), name, ts)
    elif isinstance(event, ev.TransactionCreated):
        transaction = event
        _apply_transaction(touch, event, lsn, ts)
    elif isinstance(event, ev.TransactionUpdated):
        tx = touch.node("Transaction", event.transaction_id, _tx_features(event))
        _upsert_row(tx, lsn, {"status": event.status}, _tx_features(event))
        if event.status == "declined" and event.previous_status != "declined":
            account_state, fresh = touch.node("Account", event.account_id, fx.account_features(None))
            if fresh:
                account_state.declines.add(ts)
    elif isinstance(event, ev.FraudReported):
        tx_state, fresh = touch.node("Transaction", event.transaction_id, [0.0] * fx.FEATURE_WIDTHS["Transaction"])
        if fresh:
            previous_label = tx_state.attrs.get("label")
            tx_state.attrs["label"] = event.kind
            tx_state.attrs["label_ts_ms"] = ts
        # Only on the report's first application: its replay must not mark anything again, and a
        # report that precedes its transaction's row is acted on when the row arrives (below).
        if fresh and event.kind in FRAUD_LABELS:
            _mark_parties(touch, tx_state.attrs, ts)
    # TableTruncated: nothing per row follows; the ingest stage reports it.

    applied = touch.commit(lsn)
    applied.transaction = transaction
    applied.previous_label = previous_label
    return applied


def _tx_features(t: ev.TransactionRow) -> list[float]:
    return fx.transaction_features(float(t.amount), t.kind, t.created_at)


def _ms(at: Any) -> int | None:
    return int(at.timestamp() * 1000) if at is not None else None


def _first_seen(state: NodeState, ts: int) -> None:
    # The earliest event time, not the first to arrive: partitions interleave differently on every run.
    state.attrs["first_ms"] = min(state.attrs.get("first_ms", ts), ts)


def _peer(node: tuple[NodeState, bool], item: str, ts: int) -> None:
    state, fresh = node
    if fresh:
        state.peers.add(item, ts)


def _mark(node: tuple[NodeState, bool], name: str, ts: int) -> None:
    state, fresh = node
    if fresh:
        state.marks[name] = max(state.marks.get(name, ts), ts)


def _mark_parties(touch: _Touch, tx_attrs: dict[str, Any], ts: int) -> None:
    """A confirmed-fraud report: mark the reported transaction's account, merchant, counterparty,
    device and IP (from the transaction's own state; if its row has not arrived yet, nothing is
    marked: there is no one to mark)."""
    parties = (
        ("account", "Account", tx_attrs.get("account_id"), fx.account_features(None)),
        ("merchant", "Merchant", tx_attrs.get("merchant_id"), fx.constant_features()),
        ("counterparty", "Account", tx_attrs.get("counterparty_account_id"), fx.account_features(None)),
        ("device", "Device", tx_attrs.get("device_id"), fx.constant_features()),
        ("ip", "IP", tx_attrs.get("ip"), fx.constant_features()),
    )
    marked: set[str] = set()
    for role, node_type, ident, features in parties:
        if ident is not None and node_key(node_type, ident) not in marked:  # a self-transfer counts once
            marked.add(node_key(node_type, ident))
            node = touch.node(node_type, ident, features)
            # By role: the payer of a fraud is usually its victim, its payee the fraudster's account.
            _mark(node, f"fraud:{role}", ts)
            if node[1]:
                node[0].fraud_reports += 1
                if node_type == "Merchant" and tx_attrs.get("account_id") is not None:
                    node[0].reported.add(f"account:{tx_attrs['account_id']}", ts)


def _seen_by(node: tuple[NodeState, bool], who: str | None, ts: int, amount: float | None = None) -> None:
    """One more transaction (or login) at this node: velocity, distinct parties, amounts."""
    state, fresh = node
    if fresh:
        state.last_minute.add(ts, amount or 0.0)
        state.last_hour.add(ts, amount or 0.0)
        if who is not None:
            state.distinct.add(who)
        if amount is not None:
            state.amounts.add(amount)


def _apply_transaction(touch: _Touch, t: ev.TransactionCreated, lsn: int, ts: int) -> None:
    amount = float(t.amount)
    # A row always sets its node's features: a report read before the row made a stub with none,
    # and the links below copy the features into the neighbours' sums.
    tx = touch.node("Transaction", t.transaction_id, _tx_features(t))
    _upsert_row(
        tx,
        lsn,
        {
            "account_id": t.account_id,
            "amount": amount,
            "kind": t.kind,
            "status": t.status,
            "merchant_id": t.merchant_id,
            "counterparty_account_id": t.counterparty_account_id,
            "device_id": t.device_id,
            "ip": t.ip,
            "ts_ms": ts,
        },
        _tx_features(t),
    )

    if tx[1] and tx[0].attrs.get("label") in FRAUD_LABELS:
        # The report came first (another topic, read earlier); what it marks is known only now.
        # Either order leaves the parties marked once, so a replay in another order changes nothing.
        _mark_parties(touch, tx[0].attrs, tx[0].attrs.get("label_ts_ms", ts))

    account = touch.node("Account", t.account_id, fx.account_features(None))
    _link(account, tx, "INITIATED")
    payee = (
        f"m{t.merchant_id}"
        if t.merchant_id is not None
        else f"a{t.counterparty_account_id}"
        if t.counterparty_account_id is not None
        else None
    )
    _seen_by(account, payee, ts, amount)
    if account[1]:
        account[0].recent = [*account[0].recent, t.transaction_id][-RECENT_TRANSACTIONS:]
        _first_seen(account[0], ts)
    if t.device_id is not None:
        _peer(account, f"device:{t.device_id}", ts)
    if t.ip is not None:
        _peer(account, f"ip:{t.ip}", ts)

    who, payer = str(t.account_id), f"account:{t.account_id}"
    if t.merchant_id is not None and account[1]:
        _paid(account[0], t.merchant_id, ts)
    if t.merchant_id is not None:
        merchant = touch.node("Merchant", t.merchant_id, fx.constant_features())
        _link(tx, merchant, "PAYS")
        _seen_by(merchant, who, ts, amount)
        if t.device_id is not None:  # card-not-present: who paid, through which device
            _peer(merchant, payer, ts)
            _peer(merchant, f"device:{t.device_id}", ts)
    if t.counterparty_account_id is not None:
        counterparty = touch.node("Account", t.counterparty_account_id, fx.account_features(None))
        _link(tx, counterparty, "TRANSFER_TO")
        receiver, fresh = counterparty
        if fresh:
            receiver.senders.add(payer, ts)
            receiver.received.add(ts, amount)
            _first_seen(receiver, ts)
    if t.device_id is not None:
        device = touch.node("Device", t.device_id, fx.constant_features())
        _link(tx, device, "USING_DEVICE")
        _seen_by(device, who, ts)
        _peer(device, payer, ts)
    if t.ip is not None:
        ip = touch.node("IP", t.ip, fx.constant_features())
        _link(tx, ip, "FROM_IP")
        _seen_by(ip, who, ts)
        _peer(ip, payer, ts)


def _paid(account: NodeState, merchant_id: Any, ts: int) -> None:
    key = str(merchant_id)
    seen = account.merchants.get(key)
    if seen is None:
        if len(account.merchants) >= MERCHANTS_PER_ACCOUNT:
            del account.merchants[min(account.merchants, key=lambda k: account.merchants[k][1])]
        account.merchants[key] = [1, ts]
    else:
        seen[0], seen[1] = seen[0] + 1, max(seen[1], ts)
