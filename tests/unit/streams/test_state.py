"""Node state: what one event changes, replays changing nothing (node by node), row versions, and
exactness of the incremental R-GCN over state built by the worker's own code."""

import random
from datetime import UTC, datetime
from decimal import Decimal

import torch

from fraudgraph.connectors import events as ev
from fraudgraph.models.features import FEATURE_WIDTHS
from fraudgraph.models.hetero import FRAUD_RELATIONS
from fraudgraph.models.incremental import IncrementalScorer
from fraudgraph.models.rgcn import HeteroRGCN
from fraudgraph.streams.state import NodeState, Source, apply_event

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
MS0 = int(T0.timestamp() * 1000)


class DictStore(dict):
    """A StateStore that, like the Faust table, keeps serialised copies (so aliasing bugs show)."""

    def get(self, key):
        raw = super().get(key)
        return None if raw is None else NodeState.from_json(raw)

    def put(self, state):
        self[state.key] = state.to_json()

    def snapshot(self):
        return dict(self)


def pos(lsn, ts_ms=MS0):
    return ev.SourcePosition(lsn=lsn, tx_id=None, ts_ms=ts_ms)


def tx(tid, lsn, account=1, amount="20.00", merchant=None, counterparty=None, device="d1", ip="10.0.0.1", ts_ms=MS0):
    return ev.TransactionCreated(
        pos(lsn, ts_ms),
        tid,
        account,
        "card_payment" if merchant else "transfer",
        Decimal(amount),
        "EUR",
        merchant,
        counterparty,
        device,
        ip,
        "pending",
        T0,
        T0,
    )


def src(offset, topic="bank.public.transactions", partition=0):
    return Source(topic, partition, offset, MS0)


def test_transaction_links_its_neighbours_and_updates_aggregates():
    store = DictStore()
    applied = apply_event(tx(10, 100, merchant=7), src(0), store)
    assert applied.transaction.transaction_id == 10 and applied.replayed == 0
    assert sorted(store) == ["Account:1", "Device:d1", "IP:10.0.0.1", "Merchant:7", "Transaction:10"]
    account, merchant, t = store.get("Account:1"), store.get("Merchant:7"), store.get("Transaction:10")
    assert account.neighbours.counts == {"Transaction:rev_INITIATED:Account": 1}
    assert t.neighbours.counts == {
        "Account:INITIATED:Transaction": 1,
        "Merchant:rev_PAYS:Transaction": 1,
        "Device:rev_USING_DEVICE:Transaction": 1,
        "IP:rev_FROM_IP:Transaction": 1,
    }
    assert merchant.neighbours.sums["Transaction:PAYS:Merchant"] == t.features
    assert account.amounts.count == 1 and account.amounts.mean == 20.0
    assert account.last_minute.count(MS0) == 1 and account.recent == [10]
    assert merchant.distinct.estimate() == 1
    assert all(s.version == 100 and s.applied == {"bank.public.transactions/0": 0} for s in map(store.get, store))


def test_replaying_an_event_changes_nothing():
    store = DictStore()
    events = [tx(10, 100, merchant=7), tx(11, 101, counterparty=2), tx(12, 102, merchant=7, amount="900.00")]
    for i, e in enumerate(events):
        apply_event(e, src(i), store)
    before = store.snapshot()
    for i, e in enumerate(events):
        applied = apply_event(e, src(i), store)
        assert applied.replayed == len(applied.touched)
    assert store.snapshot() == before


def test_a_partially_applied_event_is_completed_exactly_by_its_replay():
    """A crash made the transaction's own state durable but not its account's: the replay adds the
    account's half only."""
    full, partial = DictStore(), DictStore()
    apply_event(tx(10, 100, merchant=7), src(0), full)
    apply_event(tx(10, 100, merchant=7), src(0), partial)
    for key in ("Account:1", "Merchant:7"):
        del partial[key]
    applied = apply_event(tx(10, 100, merchant=7), src(0), partial)
    assert applied.replayed == 3  # transaction, device and IP had it
    assert partial.snapshot() == full.snapshot()


def test_streams_are_guarded_independently():
    """Offset 5 of another partition is new even though this node has applied offset 9 elsewhere."""
    store = DictStore()
    apply_event(tx(10, 100), src(9, partition=0), store)
    applied = apply_event(tx(11, 50), src(5, partition=1), store)
    assert applied.replayed == 0
    account = store.get("Account:1")
    assert account.amounts.count == 2
    assert account.applied == {"bank.public.transactions/0": 9, "bank.public.transactions/1": 5}


def test_an_older_row_image_never_overwrites_a_newer_one():
    store = DictStore()

    def account(lsn, status, offset):
        return apply_event(
            ev.AccountUpserted(pos(lsn), 1, 3, "checking", "EUR", status, T0),
            src(offset, "bank.public.accounts"),
            store,
        )

    account(200, "frozen", 0)
    account(150, "active", 1)  # an older image, delivered later (e.g. re-sent by the source)
    state = store.get("Account:1")
    assert state.attrs["status"] == "frozen" and state.row_version == 200
    assert state.attrs["owner"] == 3 and store.get("Customer:3").neighbours.counts == {"Account:rev_OWNS:Customer": 1}
    account(300, "closed", 2)
    assert store.get("Account:1").attrs["status"] == "closed"
    assert store.get("Customer:3").neighbours.counts == {"Account:rev_OWNS:Customer": 1}  # linked once


def test_deletes_are_version_guarded_tombstones():
    store = DictStore()
    apply_event(ev.MerchantUpserted(pos(100), 7, "m", "5411", "DE", T0), src(0, "bank.public.merchants"), store)
    apply_event(ev.EntityDeleted(pos(200), "merchant", "7"), src(1, "bank.public.merchants"), store)
    assert store.get("Merchant:7").deleted
    apply_event(ev.MerchantUpserted(pos(150), 7, "m", "5411", "DE", T0), src(2, "bank.public.merchants"), store)
    assert store.get("Merchant:7").deleted


def test_logins_profile_changes_and_labels():
    store = DictStore()
    apply_event(ev.LoginRecorded(pos(1), 1, 3, "d9", "10.1.1.1", True, T0), src(0, "bank.public.logins"), store)
    apply_event(
        ev.ProfileChanged(pos(2), 1, 3, "email", "d9", "10.1.1.1", T0), src(0, "bank.public.profile_changes"), store
    )
    apply_event(tx(10, 3), src(0), store)
    apply_event(ev.FraudReported(pos(4), 1, 10, "confirmed_fraud", T0), src(0, "bank.public.fraud_reports"), store)
    customer = store.get("Customer:3")
    assert customer.neighbours.counts == {"Device:rev_LOGGED_IN:Customer": 1, "IP:rev_LOGIN_FROM:Customer": 1}
    assert customer.recent == [[MS0, "email"]]
    assert store.get("Device:d9").distinct.estimate() == 1
    assert store.get("Transaction:10").attrs["label"] == "confirmed_fraud"
    assert store.get("Transaction:10").attrs["amount"] == 20.0  # the label did not clobber the row


def test_incremental_rgcn_over_worker_state_matches_a_full_forward():
    """Build state with apply_event, build the same graph as tensors, and compare the 2-layer
    R-GCN score of every transaction: the worker's state is exactly what the model needs."""
    rng = random.Random(3)
    store = DictStore()
    events = []
    for i in range(120):
        kind = rng.random()
        events.append(
            tx(
                1000 + i,
                10 + i,
                account=rng.randrange(8),
                amount=f"{rng.uniform(1, 500):.2f}",
                merchant=rng.randrange(5) if kind < 0.7 else None,
                counterparty=rng.randrange(8) if kind >= 0.7 else None,
                device=f"d{rng.randrange(6)}",
                ip=f"10.0.0.{rng.randrange(6)}",
                ts_ms=MS0 + i * 1000,
            )
        )
    for i, e in enumerate(events):
        apply_event(e, src(i), store)

    states = {k: store.get(k) for k in store}
    index = {t: {} for t in FEATURE_WIDTHS}
    for k, s in states.items():
        index[s.node_type][k] = len(index[s.node_type])
    x = {t: torch.zeros(max(len(index[t]), 1), w, dtype=torch.float64) for t, w in FEATURE_WIDTHS.items()}
    for k, s in states.items():
        x[s.node_type][index[s.node_type][k]] = torch.tensor(s.features, dtype=torch.float64)
    offsets, acc = {}, 0
    for t in FEATURE_WIDTHS:
        offsets[t], acc = acc, acc + x[t].size(0)
    rel_index = {r.key: i for i, r in enumerate(FRAUD_RELATIONS)}
    edges, types = [], []

    def add(src_type, src_key, name, dst_type, dst_key):
        for _, ta, ka, _, tb, kb, n in (
            (src_type, src_type, src_key, dst_type, dst_type, dst_key, name),
            (dst_type, dst_type, dst_key, src_type, src_type, src_key, f"rev_{name}"),
        ):
            edges.append((offsets[ta] + index[ta][ka], offsets[tb] + index[tb][kb]))
            types.append(rel_index[f"{ta}:{n}:{tb}"])

    for e in events:
        t = f"Transaction:{e.transaction_id}"
        add("Account", f"Account:{e.account_id}", "INITIATED", "Transaction", t)
        if e.merchant_id is not None:
            add("Transaction", t, "PAYS", "Merchant", f"Merchant:{e.merchant_id}")
        if e.counterparty_account_id is not None:
            add("Transaction", t, "TRANSFER_TO", "Account", f"Account:{e.counterparty_account_id}")
        add("Transaction", t, "USING_DEVICE", "Device", f"Device:{e.device_id}")
        add("Transaction", t, "FROM_IP", "IP", f"IP:{e.ip}")
    edge_index = torch.tensor(edges, dtype=torch.long).t()
    edge_type = torch.tensor(types, dtype=torch.long)

    torch.manual_seed(0)
    model = HeteroRGCN(FEATURE_WIDTHS, FRAUD_RELATIONS, hidden=8, out_channels=1).double()
    with torch.no_grad():
        full = model(x, edge_index, edge_type)
    scorer = IncrementalScorer(model)
    worst = 0.0
    for e in events:
        t = states[f"Transaction:{e.transaction_id}"]
        neighbours = {
            "Account:INITIATED:Transaction": [states[f"Account:{e.account_id}"]],
            "Device:rev_USING_DEVICE:Transaction": [states[f"Device:{e.device_id}"]],
            "IP:rev_FROM_IP:Transaction": [states[f"IP:{e.ip}"]],
        }
        if e.merchant_id is not None:
            neighbours["Merchant:rev_PAYS:Transaction"] = [states[f"Merchant:{e.merchant_id}"]]
        else:
            neighbours["Account:rev_TRANSFER_TO:Transaction"] = [states[f"Account:{e.counterparty_account_id}"]]
        got = scorer.score(t, neighbours)
        want = full[offsets["Transaction"] + index["Transaction"][t.key]]
        worst = max(worst, float(((got - want).abs() / want.abs().clamp_min(1e-6)).max()))
    assert worst < 1e-9


def test_a_fraud_report_marks_the_same_parties_whichever_arrives_first():
    """Reports and transactions come from different topics, so either may be applied first; the
    parties end up marked once either way, and replaying both changes nothing."""
    from fraudgraph.streams.state import node_key

    report = ev.FraudReported(pos(50, MS0 + 5000), 1, 1000, "confirmed_fraud", T0)
    payment = tx(1000, 10, account=7, merchant=3, device="dx", ip="10.9.9.9")
    ends = {}
    for order in ((payment, report), (report, payment)):
        store = DictStore()
        offsets = {id(payment): src(0), id(report): src(0, topic="bank.public.fraud_reports")}
        for e in order:
            apply_event(e, offsets[id(e)], store)
        before = store.snapshot()
        for e in order:  # a replay
            apply_event(e, offsets[id(e)], store)
        assert store.snapshot() == before
        marks = {
            k: store.get(node_key(*k.split(":", 1))).marks
            for k in ("Account:7", "Merchant:3", "Device:dx", "IP:10.9.9.9")
        }
        ends[order[0] is payment] = marks
        assert all(any(name.startswith("fraud:") for name in m) for m in marks.values()), marks
    assert ends[True].keys() == ends[False].keys()


def test_profile_marks_do_not_depend_on_topic_order_and_their_replay_rewrites_nothing():
    """A profile change read before or after its customer's account: the account ends with the same
    mark, and replaying the change writes no state (the replay test once saw one record rewritten)."""
    account = ev.AccountUpserted(pos(1), 1, 3, "checking", "EUR", "active", T0)
    change = ev.ProfileChanged(pos(2), 5, 3, "email", "d9", "10.1.1.1", T0)
    change_first, account_first = DictStore(), DictStore()
    apply_event(change, src(0, "bank.public.profile_changes"), change_first)
    apply_event(account, src(0, "bank.public.accounts"), change_first)
    apply_event(account, src(0, "bank.public.accounts"), account_first)
    apply_event(change, src(0, "bank.public.profile_changes"), account_first)
    for store in (change_first, account_first):
        assert store.get("Account:1").marks == {"profile:email": MS0}
        before = store.snapshot()
        apply_event(change, src(0, "bank.public.profile_changes"), store)
        apply_event(account, src(0, "bank.public.accounts"), store)
        assert store.snapshot() == before


def test_a_profile_change_replay_completes_an_account_a_crash_left_unmarked():
    store = DictStore()
    apply_event(
        ev.AccountUpserted(pos(1), 1, 3, "checking", "EUR", "active", T0), src(0, "bank.public.accounts"), store
    )
    unmarked = store["Account:1"]
    change = ev.ProfileChanged(pos(2), 5, 3, "phone", None, None, T0)
    apply_event(change, src(0, "bank.public.profile_changes"), store)
    store["Account:1"] = unmarked  # the customer's write was durable, the account's was not
    apply_event(change, src(0, "bank.public.profile_changes"), store)
    assert store.get("Account:1").marks == {"profile:phone": MS0}


def test_a_report_read_before_its_transaction_leaves_the_row_its_features():
    """Reports are another topic: read first, they make a stub of the transaction. The row must
    still set the features, and the neighbours must receive those, not the stub's zeros."""
    first, second = DictStore(), DictStore()
    report = ev.FraudReported(pos(200, MS0 + 5000), 1, 10, "confirmed_fraud", T0)
    apply_event(report, src(0, "bank.public.fraud_reports"), first)
    apply_event(tx(10, 100, merchant=7), src(0), first)
    apply_event(tx(10, 100, merchant=7), src(0), second)
    apply_event(report, src(0, "bank.public.fraud_reports"), second)
    t = first.get("Transaction:10")
    assert any(t.features) and t.features == second.get("Transaction:10").features
    assert first.get("Merchant:7").neighbours.sums == second.get("Merchant:7").neighbours.sums


def test_copy_is_the_json_round_trip_and_shares_nothing_mutable():
    """``NodeState.copy`` (field by field, on the hot path) must equal a JSON round trip for every
    node a simulator log builds, and no later change to the original may reach the copy."""
    from fraudgraph.settings import Settings
    from fraudgraph.stack.simulator.config import SimConfig
    from fraudgraph.training.replay import decoded, event_time_order, simulator_records

    settings, store = Settings(), DictStore()
    records = simulator_records(SimConfig(customers=30, duration_s=4 * 3600, fraud_rate=0.1, seed=2), settings)
    for i, event in enumerate(event_time_order(decoded(records, settings))):
        apply_event(event, src(i), store)
    states = [store.get(k) for k in store]
    assert {s.node_type for s in states} >= {"Customer", "Account", "Merchant", "Device", "IP", "Transaction"}

    def mutable_ids(value, out):
        if isinstance(value, (list, dict)) or hasattr(value, "__dataclass_fields__"):
            out.add(id(value))
            children = (
                value.values()
                if isinstance(value, dict)
                else (value if isinstance(value, list) else vars(value).values())
            )
            for child in children:
                mutable_ids(child, out)
        return out

    for state in states:
        copied = state.copy()
        assert copied == NodeState.from_json(state.to_json()) == state
        assert not mutable_ids(copied, set()) & mutable_ids(state, set()), state.key


def test_the_json_leaves_out_only_fields_at_their_defaults():
    """``to_json`` writes a field only when it differs from a new state's; every field, set, must
    survive the round trip (a field added to ``NodeState`` and forgotten there would be lost)."""
    import dataclasses

    empty = NodeState("Transaction", "Transaction:1", [0.5])
    assert NodeState.from_json(empty.to_json()) == empty
    assert len(empty.to_json()) < 80
    set_one = {
        "neighbours": lambda s: s.neighbours.add("pays", [1.0]),
        "version": lambda s: setattr(s, "version", 3),
        "row_version": lambda s: setattr(s, "row_version", 2),
        "applied": lambda s: s.applied.update({"t/0": 5}),
        "attrs": lambda s: s.attrs.update({"kind": "card"}),
        "deleted": lambda s: setattr(s, "deleted", True),
        "amounts": lambda s: s.amounts.add(12.5),
        "last_minute": lambda s: s.last_minute.add(MS0, 1.0),
        "last_hour": lambda s: s.last_hour.add(MS0, 1.0),
        "distinct": lambda s: s.distinct.add("account:1"),
        "recent": lambda s: s.recent.append(7),
        "peers": lambda s: s.peers.add("device:1", MS0),
        "senders": lambda s: s.senders.add("account:2", MS0),
        "reported": lambda s: s.reported.add("account:3", MS0),
        "received": lambda s: s.received.add(MS0, 1.0),
        "declines": lambda s: s.declines.add(MS0),
        "marks": lambda s: s.marks.update({"fraud:payer": MS0}),
        "fraud_reports": lambda s: setattr(s, "fraud_reports", 1),
        "merchants": lambda s: s.merchants.update({"7": [1, MS0]}),
    }
    always = {"node_type", "key", "features"}
    assert set(set_one) == {f.name for f in dataclasses.fields(NodeState)} - always
    for name, change in set_one.items():
        state = NodeState("Account", "Account:1", [0.5])
        change(state)
        assert state != NodeState("Account", "Account:1", [0.5]), name
        assert NodeState.from_json(state.to_json()) == state, name
