"""Decision rules on states built by ``apply_event`` from real domain events (the states the worker
holds): each rule fires on the shape it is for and stays quiet on the nearest legitimate shape."""

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from fraudgraph.connectors import events as ev
from fraudgraph.streams.aggregates import RecentSet, RunningMoments
from fraudgraph.streams.policy import load_policy
from fraudgraph.streams.rules import RULES, evaluate
from fraudgraph.streams.scoring import ScoringInput
from fraudgraph.streams.state import NodeState, Source, apply_event

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
MS0 = int(T0.timestamp() * 1000)
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000
PARAMS = load_policy().rule_params  # the shipped defaults


class DictStore(dict):
    """Keeps serialised copies, like the Faust table, so the rules read what a restart would."""

    def get(self, key):
        raw = super().get(key)
        return None if raw is None else NodeState.from_json(raw)

    def put(self, state):
        self[state.key] = state.to_json()


def at(ms):
    return datetime.fromtimestamp(ms / 1000, UTC)


class World:
    """Feeds domain events through apply_event, one offset per topic, LSNs in order."""

    def __init__(self):
        self.store, self.lsn, self.offsets, self.tid = DictStore(), 0, {}, 0

    def _apply(self, table, make):
        self.lsn += 1
        offset = self.offsets[table] = self.offsets.get(table, -1) + 1
        source = Source(f"bank.public.{table}", 0, offset, MS0)
        return apply_event(make(self.lsn), source, self.store), source

    def pos(self, lsn, ts):
        return ev.SourcePosition(lsn=lsn, tx_id=None, ts_ms=ts)

    def account(self, account_id, customer_id, opened_ms=MS0 - 400 * DAY):
        self._apply(
            "accounts",
            lambda lsn: ev.AccountUpserted(
                self.pos(lsn, opened_ms), account_id, customer_id, "checking", "EUR", "active", at(opened_ms)
            ),
        )

    def merchant(self, merchant_id, created_ms=MS0 - 400 * DAY):
        self._apply(
            "merchants",
            lambda lsn: ev.MerchantUpserted(
                self.pos(lsn, created_ms), merchant_id, "Shop", "5999", "GB", at(created_ms)
            ),
        )

    def login(self, customer_id, device, ip, ts):
        self._apply(
            "logins", lambda lsn: ev.LoginRecorded(self.pos(lsn, ts), lsn, customer_id, device, ip, True, at(ts))
        )

    def profile(self, customer_id, field, ts):
        self._apply(
            "profile_changes",
            lambda lsn: ev.ProfileChanged(self.pos(lsn, ts), lsn, customer_id, field, "d-new", "9.9.9.9", at(ts)),
        )

    def pay(self, account, amount, ts, merchant=None, counterparty=None, device="d1", ip="81.0.0.1"):
        self.tid += 1
        tid = self.tid
        applied, source = self._apply(
            "transactions",
            lambda lsn: ev.TransactionCreated(
                self.pos(lsn, ts),
                tid,
                account,
                "card_payment" if merchant else "transfer",
                Decimal(str(amount)),
                "EUR",
                merchant,
                counterparty,
                device,
                ip,
                "pending",
                at(ts),
                at(ts),
            ),
        )
        return ScoringInput(applied.transaction, source, {s.key: s for s in applied.touched})

    def decline(self, inp, ts):
        t = inp.transaction
        self._apply(
            "transactions",
            lambda lsn: ev.TransactionUpdated(
                self.pos(lsn, ts),
                t.transaction_id,
                t.account_id,
                t.kind,
                t.amount,
                t.currency,
                t.merchant_id,
                t.counterparty_account_id,
                t.device_id,
                t.ip,
                "declined",
                t.created_at,
                at(ts),
                "pending",
            ),
        )

    def report(self, transaction_id, ts, kind="confirmed_fraud"):
        self._apply("fraud_reports", lambda lsn: ev.FraudReported(self.pos(lsn, ts), lsn, transaction_id, kind, at(ts)))

    def history(self, account, n=10, amount=30.0, start=MS0 - 10 * DAY, device="d1", ip="81.0.0.1"):
        """``n`` habitual payments, one a day-ish, at one merchant, from one device and home IP."""
        for i in range(n):
            self.pay(account, amount + i % 3, start + i * HOUR * 20, merchant=900, device=device, ip=ip)


def fired(rule, inp, **overrides):
    return RULES[rule].check(inp, {**PARAMS[rule], **overrides})


# ---- velocity ----


def test_velocity_fires_on_a_card_testing_burst_and_not_on_a_normal_session():
    w = World()
    w.history(1)
    quiet = [w.pay(1, 20, MS0 + i * 40_000, merchant=5) for i in range(3)]  # a normal session
    assert fired("velocity", quiet[-1]) == []
    burst = [w.pay(2, 2, MS0 + i * 5_000, merchant=5, device="dx", ip="185.0.0.9") for i in range(7)]
    details = fired("velocity", burst[-1])
    assert any("7 payments from account 2 in the last minute" in d for d in details)


def test_velocity_counts_declines_and_ignores_deviceless_batches():
    w = World()
    tests = [w.pay(3, 2, MS0 + i * 15 * 60_000, merchant=5, device="dx", ip="185.0.0.9") for i in range(3)]
    assert fired("velocity", tests[-1]) == []  # three payments in 30 min: below every limit
    for i, inp in enumerate(tests):
        w.decline(inp, MS0 + i * 15 * 60_000 + 2_000)
    nxt = w.pay(3, 2, MS0 + 40 * MIN, merchant=5, device="dx", ip="185.0.0.9")
    assert fired("velocity", nxt) == ["3 declined payments from account 3 in the last hour (limit 3)"]
    # A payroll run: dozens of transfers in seconds, but a batch file, not someone at a device.
    payroll = [w.pay(4, 2500, MS0 + i * 50, counterparty=100 + i, device=None, ip=None) for i in range(30)]
    assert fired("velocity", payroll[-1]) == []
    assert fired("velocity", payroll[-1], online_only=False) != []


def test_device_velocity_fires_across_accounts():
    w = World()
    inps = [w.pay(10 + i, 5, MS0 + i * 3_000, merchant=5, device="kit", ip=f"1.1.1.{i}") for i in range(8)]
    assert fired("velocity", inps[-1]) == ["8 payments and logins on device kit in the last minute (limit 8)"]


# ---- amount anomaly ----


def test_amount_anomaly_judges_against_the_history_before_the_payment():
    w = World()
    w.history(1)
    assert fired("amount_anomaly", w.pay(1, 33, MS0, merchant=900)) == []
    big = fired("amount_anomaly", w.pay(1, 1200, MS0 + MIN, merchant=901))
    assert len(big) == 1 and "1200.00" in big[0] and "over 11 payments" in big[0]


def test_amount_anomaly_needs_history_and_a_material_amount():
    w = World()
    w.history(1, n=3)
    assert fired("amount_anomaly", w.pay(1, 1200, MS0, merchant=901)) == []  # 3 payments: no habits yet
    w2 = World()
    w2.history(1)
    assert fired("amount_anomaly", w2.pay(1, 150, MS0, merchant=901)) == []  # unusual, but below min_amount


def test_running_moments_without_undoes_add():
    m = RunningMoments()
    for x in (3.0, 5.0, 9.0, 4.0):
        m.add(x)
    before = RunningMoments()
    for x in (3.0, 5.0, 9.0):
        before.add(x)
    back = m.without(4.0)
    assert back.count == 3 and back.mean == pytest.approx(before.mean) and back.m2 == pytest.approx(before.m2)


# ---- first use of a device or IP ----


def test_new_device_and_ip_fire_only_for_an_established_account_on_first_use():
    w = World()
    w.history(1)
    assert fired("new_device_or_ip", w.pay(1, 30, MS0, merchant=900)) == []  # the usual device and IP
    first = fired("new_device_or_ip", w.pay(1, 30, MS0 + MIN, merchant=900, device="d-new", ip="45.1.1.1"))
    assert [d.split(" by ")[0] for d in first] == ["first payment from device d-new", "first payment from ip 45.1.1.1"]
    assert fired("new_device_or_ip", w.pay(1, 30, MS0 + 2 * MIN, merchant=900, device="d-new", ip="45.1.1.1")) == []
    fresh = World()
    fresh.history(2, n=2)
    assert fired("new_device_or_ip", fresh.pay(2, 30, MS0, merchant=900, device="d-new")) == []  # no habits yet


# ---- shared device or IP ----


def test_shared_device_fires_when_many_accounts_or_customers_use_it_recently():
    w = World()
    for a in range(4):
        inp = w.pay(20 + a, 50, MS0 + a * MIN, merchant=5, device="shared", ip=f"81.0.0.{a}")
    assert fired("shared_device_or_ip", inp) == []  # four accounts: a family with wallets
    inp = w.pay(24, 50, MS0 + 5 * MIN, merchant=5, device="shared", ip="81.0.0.9")
    assert fired("shared_device_or_ip", inp)[0].startswith("device shared used by 5 accounts")
    later = w.pay(25, 50, MS0 + 3 * DAY, merchant=5, device="shared", ip="81.0.0.9")
    assert fired("shared_device_or_ip", later) == []  # the others are no longer recent


def test_shared_device_counts_customers_logging_in():
    w = World()
    for c in range(3):
        w.login(50 + c, "laptop", f"81.1.0.{c}", MS0 + c * MIN)
    inp = w.pay(60, 80, MS0 + 10 * MIN, merchant=5, device="laptop", ip="81.1.0.0")
    assert "3 customers' logins" in fired("shared_device_or_ip", inp)[0]


# ---- profile change before a large transfer ----


def test_profile_change_before_large_transfer():
    w = World()
    w.account(1, customer_id=7)
    w.account(2, customer_id=7)
    w.profile(7, "email", MS0)
    w.profile(7, "phone", MS0 + 2 * MIN)
    hit = fired("profile_change_before_transfer", w.pay(2, 4000, MS0 + 10 * MIN, counterparty=99))
    assert hit == ["4000.00 transfer shortly after the owner of account 2 changed phone 8min ago, email 10min ago"]
    assert fired("profile_change_before_transfer", w.pay(2, 40, MS0 + 11 * MIN, counterparty=99)) == []  # small
    assert fired("profile_change_before_transfer", w.pay(1, 4000, MS0 + 2 * DAY, counterparty=99)) == []  # long ago


def test_profile_change_of_an_unwatched_field_does_not_fire():
    w = World()
    w.account(1, customer_id=7)
    w.profile(7, "address", MS0)
    assert fired("profile_change_before_transfer", w.pay(1, 4000, MS0 + MIN, counterparty=99)) == []


# ---- mule ----


def test_mule_fires_on_a_new_account_collecting_and_forwarding():
    w = World()
    w.account(500, customer_id=50, opened_ms=MS0 - HOUR)  # the mule, opened an hour ago
    w.account(600, customer_id=60, opened_ms=MS0 - HOUR)  # the collector
    first = [
        w.pay(10 + v, 1000, MS0 + v * 5 * MIN, counterparty=500, device=f"v{v}", ip=f"81.2.0.{v}") for v in range(3)
    ]
    assert fired("mule", first[1]) == []  # two payers: not yet many
    assert fired("mule", first[2])[0].startswith(
        "payee account 500, known for 70min, received transfers from 3 accounts"
    )
    forward = fired("mule", w.pay(500, 2850, MS0 + 25 * MIN, counterparty=600, device="ring", ip="81.9.9.9"))
    assert any(
        d.startswith("account 500, known for 85min, forwards 2850.00 (95% of 3000.00 received from 3 accounts)")
        for d in forward
    )


def test_mule_stays_quiet_for_an_old_account_or_a_slow_small_forward():
    w = World()
    w.account(500, customer_id=50)  # opened 400 days ago: a popular old account
    for v in range(4):
        inp = w.pay(10 + v, 1000, MS0 + v * MIN, counterparty=500, device=f"v{v}", ip=f"81.2.0.{v}")
    assert fired("mule", inp) == []
    assert fired("mule", w.pay(500, 3800, MS0 + 10 * MIN, counterparty=600)) == []
    w2 = World()
    w2.account(500, customer_id=50, opened_ms=MS0 - HOUR)
    for v in range(3):
        w2.pay(10 + v, 1000, MS0 + v * MIN, counterparty=500, device=f"v{v}", ip=f"81.2.0.{v}")
    assert not any(d.startswith("account 500") for d in fired("mule", w2.pay(500, 3000, MS0 + 3 * HOUR)))  # slow
    assert not any(d.startswith("account 500") for d in fired("mule", w2.pay(500, 100, MS0 + 4 * MIN)))  # small


# ---- proximity to confirmed fraud ----


def test_fraud_report_marks_the_parties_and_proximity_fires():
    w = World()
    bad = w.pay(1, 300, MS0, merchant=5, device="kit", ip="185.0.0.1")
    assert fired("fraud_proximity", w.pay(2, 30, MS0 + MIN, merchant=6, device="kit", ip="81.0.0.2")) == []
    w.report(bad.transaction.transaction_id, MS0 + HOUR)
    inp = w.pay(2, 30, MS0 + 2 * HOUR, merchant=6, device="kit", ip="81.0.0.2")
    assert fired("fraud_proximity", inp) == [
        "device kit was used in 1 confirmed-fraud transaction(s), last reported 60min ago"
    ]
    assert fired("fraud_proximity", w.pay(3, 30, MS0 + 2 * HOUR, merchant=5, device="d3", ip="81.0.0.3")) == []
    assert fired("fraud_proximity", w.pay(2, 30, MS0 + 40 * DAY, merchant=6, device="kit", ip="81.0.0.2")) == []


def test_a_false_positive_report_marks_nothing():
    w = World()
    ok = w.pay(1, 300, MS0, merchant=5, device="d1", ip="81.0.0.1")
    w.report(ok.transaction.transaction_id, MS0 + HOUR, kind="false_positive")
    assert fired("fraud_proximity", w.pay(1, 30, MS0 + 2 * HOUR, merchant=6)) == []


# ---- colluding merchant ----


def test_colluding_merchant_fires_on_payers_concentrated_on_few_devices():
    w = World()
    w.merchant(77, created_ms=MS0 - HOUR)
    for v in range(5):
        inp = w.pay(100 + v, 300, MS0 + v * MIN, merchant=77, device="kit", ip="185.7.7.7")
    assert fired("colluding_merchant", inp) == [
        "merchant 77, created 64min ago: 5 online payers through only 1 device(s) in the last 60min"
    ]
    honest = World()
    for v in range(8):
        inp = honest.pay(100 + v, 30, MS0 + v * MIN, merchant=78, device=f"phone{v}", ip=f"81.0.1.{v}")
    assert fired("colluding_merchant", inp) == []


def test_colluding_merchant_fraud_share_counts_distinct_reported_payers():
    w = World()
    tester = [w.pay(1, 2, MS0 + i * 10_000, merchant=5, device="dx", ip="185.0.0.1") for i in range(6)]
    for inp in tester:  # one stolen card tried six times: the shop is a victim, not an accomplice
        w.report(inp.transaction.transaction_id, MS0 + HOUR)
    assert fired("colluding_merchant", w.pay(2, 20, MS0 + 2 * HOUR, merchant=5, device=None, ip=None)) == []
    w2 = World()
    bad = [w2.pay(10 + v, 200, MS0 + v * HOUR, merchant=6, device=None, ip=None) for v in range(3)]
    for inp in bad:
        w2.report(inp.transaction.transaction_id, MS0 + 5 * HOUR)
    hit = fired("colluding_merchant", w2.pay(20, 20, MS0 + 6 * HOUR, merchant=6, device=None, ip=None))
    assert hit == ["merchant 6: 75% of its 4 payments reported as fraud, from 3 different accounts"]


# ---- the rule set as a whole ----


def test_rules_do_not_raise_on_a_transaction_without_neighbour_states():
    w = World()
    inp = w.pay(1, 5000, MS0, merchant=5, counterparty=None)
    bare = ScoringInput(inp.transaction, inp.source, {})
    assert evaluate(bare, PARAMS) == []


def test_evaluate_lists_hits_most_severe_first():
    w = World()
    w.history(1)
    w.account(1, customer_id=7)
    w.profile(7, "email", MS0)
    inp = w.pay(1, 4000, MS0 + MIN, counterparty=99, device="d-new", ip="45.0.0.1")
    hits = evaluate(inp, PARAMS)
    assert [h.rule for h in hits] == [
        "profile_change_before_transfer",
        "amount_anomaly",
        "new_device_or_ip",
        "new_device_or_ip",
    ]
    assert [h.severity for h in hits] == ["high", "medium", "low", "low"]
    assert all(h.reason.code == h.rule for h in hits)


def test_new_state_fields_round_trip_through_json():
    w = World()
    w.account(500, customer_id=50, opened_ms=MS0 - HOUR)
    w.merchant(77)
    w.profile(50, "mfa", MS0)
    inp = w.pay(1, 300, MS0 + MIN, counterparty=500, device="kit", ip="185.0.0.1")
    w.decline(inp, MS0 + MIN + 500)
    w.report(
        w.pay(2, 30, MS0 + 2 * MIN, merchant=77, device="kit", ip="185.0.0.1").transaction.transaction_id, MS0 + HOUR
    )
    for key in ("Account:1", "Account:500", "Merchant:77", "Device:kit", "Customer:50"):
        raw = dict.__getitem__(w.store, key)
        state = NodeState.from_json(raw)
        assert state.to_json() == raw
        assert isinstance(state.peers, RecentSet) and isinstance(state.reported, RecentSet)
    assert w.store.get("Account:1").declines.count(MS0 + MIN + 500) == 1
    assert w.store.get("Account:500").senders.first_seen("account:1") == MS0 + MIN
    assert w.store.get("Account:500").marks == {"profile:mfa": MS0}
    merchant = w.store.get("Merchant:77")
    assert merchant.fraud_reports == 1 and merchant.reported.first_seen("account:2") == MS0 + HOUR
    assert merchant.attrs["created_ms"] == MS0 - 400 * DAY


def test_a_state_written_before_the_new_fields_still_loads():
    import orjson

    w = World()
    w.pay(1, 30, MS0, merchant=5)
    d = orjson.loads(dict.__getitem__(w.store, "Account:1"))
    assert "peers" in d  # the payment filled it: the load below must do without it
    for name in ("peers", "senders", "reported", "received", "declines", "marks", "fraud_reports"):
        d.pop(name, None)  # written only when not at its default
    state = NodeState.from_json(orjson.dumps(d))
    assert state.peers.items == {} and state.fraud_reports == 0


def test_replaying_reports_and_profile_changes_changes_nothing():
    w = World()
    w.account(1, customer_id=7)
    bad = w.pay(1, 300, MS0, merchant=5, device="kit", ip="185.0.0.1")
    before = dict(w.store)
    src = Source("bank.public.fraud_reports", 0, 0, MS0)
    report = ev.FraudReported(w.pos(99, MS0 + HOUR), 1, bad.transaction.transaction_id, "chargeback", at(MS0 + HOUR))
    apply_event(report, src, w.store)
    marked = dict(w.store)
    assert marked != before
    applied = apply_event(report, src, w.store)
    # the transaction knows it already applied this report, so its parties are not even read again
    assert applied.replayed == len(applied.touched) == 1 and dict(w.store) == marked
    change = ev.ProfileChanged(w.pos(100, MS0), 1, 7, "phone", None, None, at(MS0))
    src = Source("bank.public.profile_changes", 0, 0, MS0)
    apply_event(change, src, w.store)
    changed = dict(w.store)
    apply_event(change, src, w.store)
    assert dict(w.store) == changed and w.store.get("Account:1").marks["profile:phone"] == MS0


def test_recent_set_is_capped_and_drops_the_longest_unseen():
    s = RecentSet(cap=3)
    for i, item in enumerate(("a", "b", "c")):
        s.add(item, i)
    s.add("a", 10)  # a seen again: b is now the longest unseen
    s.add("d", 11)
    assert set(s.items) == {"a", "c", "d"} and s.first_seen("a") == 0 and s.count(10) == 2


def test_every_rule_has_a_default_in_the_shipped_policy():
    assert set(PARAMS) == set(RULES)
    assert all(replace(load_policy().rules[name]).params.keys() == RULES[name].defaults.keys() for name in RULES)


def test_proximity_follows_the_money_not_the_victim():
    """The payer of a reported transfer is its victim: their next payment is fine. The payee received
    fraud money: paying it, or it paying on, fires."""
    w = World()
    scam = w.pay(1, 900, MS0, counterparty=500, device="victim-phone", ip="81.0.0.1")
    w.report(scam.transaction.transaction_id, MS0 + HOUR)
    assert fired("fraud_proximity", w.pay(1, 30, MS0 + 2 * HOUR, merchant=6, device="d9", ip="81.0.0.9")) == []
    assert fired(
        "fraud_proximity", w.pay(500, 850, MS0 + 2 * HOUR, counterparty=600, device="ring", ip="81.5.5.5")
    ) == ["account 500 received money in 1 confirmed-fraud transaction(s), last reported 60min ago"]
    assert fired("fraud_proximity", w.pay(2, 50, MS0 + 3 * HOUR, counterparty=500, device="d2", ip="81.0.0.2")) == [
        "counterparty 500 received money in 1 confirmed-fraud transaction(s), last reported 2h ago"
    ]
