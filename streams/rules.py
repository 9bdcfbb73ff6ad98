"""Decision rules: what a bank's fraud team writes down, each a pure function over per-node state.

Each rule reads the ``ScoringInput`` of one transaction (the states of the transaction, its account,
merchant or counterparty account, device and IP, right after the transaction was applied, so every
aggregate already includes it) and its parameters from the policy, and returns the reasons it fired
for (none: it did not fire). Rules never raise on a missing state: a neighbour the worker has no
state for simply gives the rule nothing to go on, and it does not fire.

Why rules next to a model: they catch what is known to be fraud with a reason an analyst (and a
regulator) can read, from the first transaction of a new pattern variant; the model catches what
no one wrote a rule for. The policy (``policy.py``) decides what a hit does.

Rules never read the simulator's labels: only state built from CDC events, as in production. The
only ground truth they see is ``fraud_reports``, which arrives late, as chargebacks do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fraudgraph.streams.scoring import Reason, ScoringInput
from fraudgraph.streams.state import NodeState

LOW, MEDIUM, HIGH = "low", "medium", "high"
SEVERITIES = (LOW, MEDIUM, HIGH)  # ordered: reasons are listed most severe first

Params = Mapping[str, Any]


@dataclass(frozen=True)
class Hit:
    rule: str
    severity: str
    reason: Reason


@dataclass(frozen=True)
class Rule:
    name: str
    severity: str
    action: str  # what a hit does unless the policy says otherwise: "none" (record only), "review", "block"
    defaults: Mapping[str, Any]  # parameter -> default; the default's type is the parameter's type
    check: Callable[[ScoringInput, Params], list[str]]  # why it fired, one detail per finding
    doc: str


def _ago(ms: int) -> str:
    s = max(ms, 0) // 1000
    return (
        f"{s}s" if s < 120 else f"{s // 60}min" if s < 7200 else f"{s // 3600}h" if s < 172_800 else f"{s // 86_400}d"
    )


def _age_ms(account: NodeState, now: int) -> int | None:
    """How long the bank has known the account: since it was opened, or since its first activity
    the worker saw when the open date never arrived."""
    known = [t for t in (account.attrs.get("opened_ms"), account.attrs.get("first_ms")) if t is not None]
    return now - min(known) if known else None


# ---- the rules ----


def velocity(inp: ScoringInput, p: Params) -> list[str]:
    t, now = inp.transaction, inp.transaction.position.ts_ms
    if p["online_only"] and t.device_id is None and t.ip is None:
        return []  # batch files (payroll) and card-present payments come without a device: not this rule's risk
    out = []
    account = inp.state("Account", t.account_id)
    if account is not None:
        for counter, limit, window in (
            (account.last_minute, p["account_per_minute"], "minute"),
            (account.last_hour, p["account_per_hour"], "hour"),
        ):
            n = counter.count(now)
            if n >= limit:
                out.append(f"{n} payments from account {t.account_id} in the last {window} (limit {limit})")
        declined = account.declines.count(now)
        if declined >= p["declines_per_hour"]:
            out.append(
                f"{declined} declined payments from account {t.account_id} in the last hour "
                f"(limit {p['declines_per_hour']})"
            )
    device = inp.state("Device", t.device_id)
    if device is not None:
        for counter, limit, window in (
            (device.last_minute, p["device_per_minute"], "minute"),
            (device.last_hour, p["device_per_hour"], "hour"),
        ):
            n = counter.count(now)
            if n >= limit:
                out.append(f"{n} payments and logins on device {t.device_id} in the last {window} (limit {limit})")
    return out


def amount_anomaly(inp: ScoringInput, p: Params) -> list[str]:
    t = inp.transaction
    account = inp.state("Account", t.account_id)
    amount = float(t.amount)
    if account is None or amount < p["min_amount"]:
        return []
    before = account.amounts.without(amount)  # the state already counts this payment: judge it against the past
    if before.count < p["min_history"]:
        return []
    z = before.zscore(amount)
    ratio = amount / before.mean if before.mean > 0 else float("inf")
    if z >= p["z_score"] and ratio >= p["min_ratio"]:
        return [
            f"amount {amount:.2f} is {ratio:.1f}x account {t.account_id}'s mean of {before.mean:.2f} "
            f"({z:.1f} standard deviations, over {before.count} payments)"
        ]
    return []


def new_device_or_ip(inp: ScoringInput, p: Params) -> list[str]:
    t, now = inp.transaction, inp.transaction.position.ts_ms
    account = inp.state("Account", t.account_id)
    if account is None or account.amounts.count - 1 < p["min_history"]:
        return []  # a new account has no habits yet: everything is "new", so nothing is
    out = []
    for kind, ident in (("device", t.device_id), ("ip", t.ip)):
        # First seen at this very transaction: it was not among the account's known devices/IPs before.
        if ident is not None and account.peers.first_seen(f"{kind}:{ident}") == now:
            known = sum(1 for k in account.peers.items if k.startswith(f"{kind}:")) - 1
            out.append(
                f"first payment from {kind} {ident} by account {t.account_id} "
                f"({known} {kind}s known, {account.amounts.count - 1} earlier payments)"
            )
    return out


def shared_device_or_ip(inp: ScoringInput, p: Params) -> list[str]:
    t, now = inp.transaction, inp.transaction.position.ts_ms
    since = now - int(p["window_s"] * 1000)
    out = []
    for node_type, kind, ident in (("Device", "device", t.device_id), ("IP", "ip", t.ip)):
        state = inp.state(node_type, ident)
        if state is None:
            continue
        accounts, customers = state.peers.count(since, "account:"), state.peers.count(since, "customer:")
        max_accounts, max_customers = p[f"{kind}_accounts"], p[f"{kind}_customers"]
        if accounts >= max_accounts or customers >= max_customers:
            out.append(
                f"{kind} {ident} used by {accounts} accounts and {customers} customers' logins in the last "
                f"{_ago(int(p['window_s'] * 1000))} (limits {max_accounts} / {max_customers})"
            )
    return out


def profile_change_before_transfer(inp: ScoringInput, p: Params) -> list[str]:
    t, now = inp.transaction, inp.transaction.position.ts_ms
    account = inp.state("Account", t.account_id)
    if account is None or float(t.amount) < p["min_amount"]:
        return []
    window = int(p["window_s"] * 1000)
    changed = sorted(
        (now - account.marks[f"profile:{f}"], f)
        for f in p["fields"]
        if now - account.marks.get(f"profile:{f}", -(10**15)) <= window
    )
    if not changed:
        return []
    what = ", ".join(f"{f} {_ago(ago)} ago" for ago, f in changed)
    return [f"{float(t.amount):.2f} {t.kind} shortly after the owner of account {t.account_id} changed {what}"]


def mule(inp: ScoringInput, p: Params) -> list[str]:
    """Both ends of a money-mule hop: a new account that collects from many payers, and the same
    account passing the money on soon after."""
    t, now = inp.transaction, inp.transaction.position.ts_ms
    since, max_age = now - int(p["window_s"] * 1000), int(p["max_account_age_s"] * 1000)
    out = []
    receiver = inp.state("Account", t.counterparty_account_id)
    if receiver is not None:
        age, senders = _age_ms(receiver, now), receiver.senders.count(since)
        if age is not None and age <= max_age and senders >= p["min_senders"]:
            out.append(
                f"payee account {t.counterparty_account_id}, known for {_ago(age)}, received transfers "
                f"from {senders} accounts in the last {_ago(now - since)}"
            )
    payer = inp.state("Account", t.account_id)
    if payer is not None:
        age, senders = _age_ms(payer, now), payer.senders.count(since)
        last_in = max((last for _, last in payer.senders.items.values()), default=None)
        received = payer.received.total(now)
        if (
            age is not None
            and age <= max_age
            and senders >= p["min_senders"]
            and last_in is not None
            and now - last_in <= p["forward_within_s"] * 1000
            and received > 0
            and float(t.amount) >= p["forward_fraction"] * received
        ):
            out.append(
                f"account {t.account_id}, known for {_ago(age)}, forwards {float(t.amount):.2f} "
                f"({float(t.amount) / received:.0%} of {received:.2f} received from {senders} accounts) "
                f"{_ago(now - last_in)} after the last transfer in"
            )
    return out


# Which marks make a party of this payment risky. An account that *paid* in a confirmed fraud was
# usually its victim (a stolen card, a scammed customer), so its own later payments are not suspect;
# an account that *received* fraud money (a mule, a drop account) is, whether it now pays or is paid.
_PROXIMITY = {
    "account": ("Account", "fraud:counterparty"),
    "counterparty": ("Account", "fraud:counterparty"),
    "device": ("Device", "fraud:device"),
    "ip": ("IP", "fraud:ip"),
    "merchant": ("Merchant", "fraud:merchant"),
}


def fraud_proximity(inp: ScoringInput, p: Params) -> list[str]:
    t, now = inp.transaction, inp.transaction.position.ts_ms
    window = int(p["window_s"] * 1000)
    idents = {
        "account": t.account_id,
        "counterparty": t.counterparty_account_id,
        "device": t.device_id,
        "ip": t.ip,
        "merchant": t.merchant_id,
    }
    out = []
    for role in p["parties"]:
        node_type, mark = _PROXIMITY[role]
        state = inp.state(node_type, idents[role])
        if state is None:
            continue
        marked = state.marks.get(mark)
        if marked is not None and 0 <= now - marked <= window:
            what = "received money in" if mark == "fraud:counterparty" else "was used in"
            out.append(
                f"{role} {idents[role]} {what} {state.fraud_reports} confirmed-fraud transaction(s), "
                f"last reported {_ago(now - marked)} ago"
            )
    return out


def colluding_merchant(inp: ScoringInput, p: Params) -> list[str]:
    t, now = inp.transaction, inp.transaction.position.ts_ms
    merchant = inp.state("Merchant", t.merchant_id)
    if merchant is None:
        return []
    out = []
    created = merchant.attrs.get("created_ms")
    age = f", created {_ago(now - created)} ago" if created is not None else ""
    since = now - int(p["window_s"] * 1000)
    payers, devices = merchant.peers.count(since, "account:"), merchant.peers.count(since, "device:")
    if payers >= p["min_payers"] and payers / max(devices, 1) >= p["payers_per_device"]:
        out.append(
            f"merchant {t.merchant_id}{age}: {payers} online payers through only {devices} device(s) "
            f"in the last {_ago(now - since)}"
        )
    reported = merchant.reported.count(now - int(p["report_window_s"] * 1000))
    share = merchant.fraud_reports / merchant.amounts.count if merchant.amounts.count else 0.0
    # Distinct reported payers, not reports: a card tester's twenty attempts at one shop are one
    # victim's card, not a shop in on it.
    if reported >= p["min_reported_payers"] and share >= p["report_share"]:
        out.append(
            f"merchant {t.merchant_id}{age}: {share:.0%} of its {merchant.amounts.count} payments reported "
            f"as fraud, from {reported} different accounts"
        )
    return out


RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule(
            "velocity",
            MEDIUM,
            "review",
            {
                "online_only": True,
                "account_per_minute": 6,
                "account_per_hour": 20,
                "declines_per_hour": 3,
                "device_per_minute": 8,
                "device_per_hour": 30,
            },
            velocity,
            "payments per account and device over 1 min and 1 h, and declines per account over 1 h",
        ),
        Rule(
            "amount_anomaly",
            MEDIUM,
            "none",
            {
                "min_history": 5,
                "min_amount": 200.0,
                "z_score": 4.0,
                "min_ratio": 5.0,
            },
            amount_anomaly,
            "amount far above the account's own history",
        ),
        Rule(
            "new_device_or_ip",
            LOW,
            "none",
            {"min_history": 5},
            new_device_or_ip,
            "an established account pays from a device or IP it never used",
        ),
        Rule(
            "shared_device_or_ip",
            MEDIUM,
            "review",
            {
                "window_s": 86_400.0,
                "device_accounts": 5,
                "device_customers": 3,
                "ip_accounts": 8,
                "ip_customers": 5,
            },
            shared_device_or_ip,
            "device or IP used by many accounts or customers recently",
        ),
        Rule(
            "profile_change_before_transfer",
            HIGH,
            "review",
            {
                "fields": ["email", "phone", "mfa"],
                "window_s": 86_400.0,
                "min_amount": 500.0,
            },
            profile_change_before_transfer,
            "email, phone or MFA changed shortly before a large payment",
        ),
        Rule(
            "mule",
            HIGH,
            "review",
            {
                "window_s": 86_400.0,
                "max_account_age_s": 604_800.0,
                "min_senders": 3,
                "forward_within_s": 3_600.0,
                "forward_fraction": 0.5,
            },
            mule,
            "a new account receiving from many accounts, or forwarding what it received quickly",
        ),
        Rule(
            "fraud_proximity",
            HIGH,
            "review",
            {
                "window_s": 2_592_000.0,
                "parties": ["account", "counterparty", "device", "ip"],
            },
            fraud_proximity,
            "a party of the payment was in a confirmed-fraud transaction recently",
        ),
        Rule(
            "colluding_merchant",
            HIGH,
            "review",
            {
                "window_s": 3_600.0,
                "min_payers": 5,
                "payers_per_device": 3.0,
                "report_window_s": 2_592_000.0,
                "min_reported_payers": 3,
                "report_share": 0.2,
            },
            colluding_merchant,
            "online payers concentrated on few devices, or a high share of fraud reports",
        ),
    )
}
# Allowed values of list parameters (checked by the policy loader).
CHOICES = {
    ("profile_change_before_transfer", "fields"): {"email", "phone", "mfa", "password", "address"},
    ("fraud_proximity", "parties"): {"account", "counterparty", "device", "ip", "merchant"},
}


def evaluate(inp: ScoringInput, params: Mapping[str, Params]) -> list[Hit]:
    """Run the rules named in ``params`` (the enabled ones, with their parameters), most severe first."""
    hits: list[Hit] = []
    for name, rule_params in params.items():
        rule = RULES[name]
        hits.extend(Hit(name, rule.severity, Reason(name, detail)) for detail in rule.check(inp, rule_params))
    return sorted(hits, key=lambda h: -SEVERITIES.index(h.severity))
