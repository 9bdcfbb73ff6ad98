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

Unknown fields: a bank's mapping may leave a field out, and a row may hold null where the field may
be unknown (``connectors/mapping.py``: ``UNKNOWN_FIELDS``). A rule never guesses such a value. Where
a finding depends on one, it does not fire and names the field (``Needs``), and ``evaluate_all``
makes that one ``rule_skipped`` reason per rule that did not fire: it informs the analyst and decides
nothing. A rule names a field when, had the value been known, it might have fired: every other
condition of the finding held (a new account's age), or the finding rests on that value alone (a
device's velocity, with no device known). A payment's own device, IP, merchant or counterparty is
unknown only when the mapping does not provide it: a mapped column's null keeps its meaning (a
card-present payment has no device, a card payment no payee account), so complete data decides and
explains exactly as before.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from fraudgraph.connectors.events import TransactionCreated
from fraudgraph.connectors.mapping import UNKNOWN_FIELDS
from fraudgraph.streams.scoring import Reason, ScoringInput
from fraudgraph.streams.state import NodeState

LOW, MEDIUM, HIGH = "low", "medium", "high"
SEVERITIES = (LOW, MEDIUM, HIGH)  # ordered: reasons are listed most severe first

Params = Mapping[str, Any]

SKIPPED = "rule_skipped"  # the reason code of a rule an unknown field kept from deciding
OPENED_AT = "AccountUpserted.opened_at"
# A payment's payee is its merchant or its counterparty account: with one of them known, the other's
# None says "not this kind of payment", not "unknown".
_PAYEE = {"merchant_id": "counterparty_account_id", "counterparty_account_id": "merchant_id"}


def unmapped_fields(present: Collection[str] | None) -> frozenset[str]:
    """The fields that may be unknown (``Event.field``) which a mapping providing ``present`` leaves
    out; ``None``: a mapping that provides every field."""
    return frozenset() if present is None else frozenset(UNKNOWN_FIELDS) - set(present)


class Needs:
    """The unknown fields one rule needed for one payment, and why each is unknown."""

    __slots__ = ("unmapped", "fields")

    def __init__(self, unmapped: Collection[str] = frozenset()):
        self.unmapped = unmapped  # Event.field names the worker's mapping leaves out
        self.fields: dict[str, str] = {}  # Event.field -> why it is unknown

    def unknown(self, t: TransactionCreated, name: str) -> bool:
        """Whether the payment's field ``name`` is unknown, rather than known to be absent."""
        if not self.unmapped or getattr(t, name) is not None or f"TransactionRow.{name}" not in self.unmapped:
            return False
        other = _PAYEE.get(name)
        return other is None or getattr(t, other) is None

    def need(self, event_field: str) -> None:
        self.fields.setdefault(event_field, "not in the mapping" if event_field in self.unmapped else "null in the row")

    def detail(self, rule: str) -> str:
        return f"{rule}: " + ", ".join(f"{f} unknown ({why})" for f, why in self.fields.items())


class Check(Protocol):
    """Why the rule fired, one detail per finding; the unknown fields it needed go to ``needs``."""

    def __call__(self, inp: ScoringInput, p: Params, needs: Needs | None = None, /) -> list[str]: ...


@dataclass(frozen=True)
class Hit:
    rule: str
    severity: str
    reason: Reason


@dataclass(frozen=True)
class Skip:
    """A rule that did not fire because a field it needed is unknown: information, never a hit."""

    rule: str
    reason: Reason  # code SKIPPED


@dataclass(frozen=True)
class Evaluation:
    hits: list[Hit] = field(default_factory=list)  # most severe first
    skipped: list[Skip] = field(default_factory=list)  # in the order the rules ran


@dataclass(frozen=True)
class Rule:
    name: str
    severity: str
    action: str  # what a hit does unless the policy says otherwise: "none" (record only), "review", "block"
    defaults: Mapping[str, Any]  # parameter -> default; the default's type is the parameter's type
    check: Check
    doc: str


def _ago(ms: int) -> str:
    s = max(ms, 0) // 1000
    return (
        f"{s}s" if s < 120 else f"{s // 60}min" if s < 7200 else f"{s // 3600}h" if s < 172_800 else f"{s // 86_400}d"
    )


def _age_ms(account: NodeState, now: int, unmapped: Collection[str]) -> int | None:
    """How long the bank has known the account: since it was opened, or since its first activity
    the worker saw while its row has not arrived. None when there is nothing to go on, or when the
    opening date is unknown (``_may_be_new`` then says whether the age could matter)."""
    if _opening_unknown(account, unmapped):
        return None  # its first activity may be years after it was opened: not an age
    known = [t for t in (account.attrs.get("opened_ms"), account.attrs.get("first_ms")) if t is not None]
    return now - min(known) if known else None


def _opening_unknown(account: NodeState, unmapped: Collection[str]) -> bool:
    """Its row arrived without an opening date, or the mapping has none (then no row ever brings one).
    A row not arrived yet is not unknown: the key is absent then, not None."""
    return account.attrs.get("opened_ms") is None and ("opened_ms" in account.attrs or OPENED_AT in unmapped)


def _may_be_new(account: NodeState, now: int, max_age_ms: int) -> bool:
    """Whether an account whose opening date is unknown might be younger than ``max_age_ms``: not
    if the worker saw it active before then."""
    first = account.attrs.get("first_ms")
    return first is None or now - first <= max_age_ms


# ---- the rules ----


def velocity(inp: ScoringInput, p: Params, needs: Needs | None = None) -> list[str]:
    needs = Needs() if needs is None else needs
    t, now = inp.transaction, inp.transaction.position.ts_ms
    offline = p["online_only"] and t.device_id is None and t.ip is None
    online_unknown = [f"TransactionRow.{n}" for n in ("device_id", "ip") if needs.unknown(t, n)] if offline else []
    if offline and not online_unknown:
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
    if offline:  # whether the payment was online is unknown: what the account's counts found decides nothing
        if out:
            for name in online_unknown:
                needs.need(name)
        out = []
    if needs.unknown(t, "device_id"):
        needs.need("TransactionRow.device_id")
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


def amount_anomaly(inp: ScoringInput, p: Params, needs: Needs | None = None) -> list[str]:
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


def new_device_or_ip(inp: ScoringInput, p: Params, needs: Needs | None = None) -> list[str]:
    needs = Needs() if needs is None else needs
    t, now = inp.transaction, inp.transaction.position.ts_ms
    account = inp.state("Account", t.account_id)
    if account is None or account.amounts.count - 1 < p["min_history"]:
        return []  # a new account has no habits yet: everything is "new", so nothing is
    out = []
    for kind, name, ident in (("device", "device_id", t.device_id), ("ip", "ip", t.ip)):
        if needs.unknown(t, name):
            needs.need(f"TransactionRow.{name}")
        # First seen at this very transaction: it was not among the account's known devices/IPs before.
        elif ident is not None and account.peers.first_seen(f"{kind}:{ident}") == now:
            known = sum(1 for k in account.peers.items if k.startswith(f"{kind}:")) - 1
            out.append(
                f"first payment from {kind} {ident} by account {t.account_id} "
                f"({known} {kind}s known, {account.amounts.count - 1} earlier payments)"
            )
    return out


def shared_device_or_ip(inp: ScoringInput, p: Params, needs: Needs | None = None) -> list[str]:
    needs = Needs() if needs is None else needs
    t, now = inp.transaction, inp.transaction.position.ts_ms
    since = now - int(p["window_s"] * 1000)
    out = []
    for node_type, kind, name in (("Device", "device", "device_id"), ("IP", "ip", "ip")):
        ident = getattr(t, name)
        if needs.unknown(t, name):
            needs.need(f"TransactionRow.{name}")
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


def profile_change_before_transfer(inp: ScoringInput, p: Params, needs: Needs | None = None) -> list[str]:
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


def mule(inp: ScoringInput, p: Params, needs: Needs | None = None) -> list[str]:
    """Both ends of a money-mule hop: a new account that collects from many payers, and the same
    account passing the money on soon after."""
    needs = Needs() if needs is None else needs
    t, now = inp.transaction, inp.transaction.position.ts_ms
    since, max_age = now - int(p["window_s"] * 1000), int(p["max_account_age_s"] * 1000)
    out = []

    def young(account: NodeState, age: int | None) -> bool:
        """Whether the account is new; an unknown age that might be new is named, not guessed."""
        if age is None and _opening_unknown(account, needs.unmapped) and _may_be_new(account, now, max_age):
            needs.need(OPENED_AT)
        return age is not None and age <= max_age

    if needs.unknown(t, "counterparty_account_id"):
        needs.need("TransactionRow.counterparty_account_id")
    receiver = inp.state("Account", t.counterparty_account_id)
    if receiver is not None:
        age, senders = _age_ms(receiver, now, needs.unmapped), receiver.senders.count(since)
        if senders >= p["min_senders"] and young(receiver, age):
            assert age is not None  # young() says so
            out.append(
                f"payee account {t.counterparty_account_id}, known for {_ago(age)}, received transfers "
                f"from {senders} accounts in the last {_ago(now - since)}"
            )
    payer = inp.state("Account", t.account_id)
    if payer is not None:
        age, senders = _age_ms(payer, now, needs.unmapped), payer.senders.count(since)
        last_in = max((last for _, last in payer.senders.items.values()), default=None)
        received = payer.received.total(now)
        if (
            senders >= p["min_senders"]
            and last_in is not None
            and now - last_in <= p["forward_within_s"] * 1000
            and received > 0
            and float(t.amount) >= p["forward_fraction"] * received
            and young(payer, age)
        ):
            assert age is not None  # young() says so
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
_ROLE_FIELDS = {
    "account": "account_id",
    "counterparty": "counterparty_account_id",
    "device": "device_id",
    "ip": "ip",
    "merchant": "merchant_id",
}  # role -> the payment's field naming that party


def fraud_proximity(inp: ScoringInput, p: Params, needs: Needs | None = None) -> list[str]:
    needs = Needs() if needs is None else needs
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
        if needs.unknown(t, _ROLE_FIELDS[role]):
            needs.need(f"TransactionRow.{_ROLE_FIELDS[role]}")
            continue
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


def colluding_merchant(inp: ScoringInput, p: Params, needs: Needs | None = None) -> list[str]:
    needs = Needs() if needs is None else needs
    t, now = inp.transaction, inp.transaction.position.ts_ms
    if needs.unknown(t, "merchant_id"):
        needs.need("TransactionRow.merchant_id")
    merchant = inp.state("Merchant", t.merchant_id)
    if merchant is None:
        return []
    out = []
    created = merchant.attrs.get("created_ms")
    age = f", created {_ago(now - created)} ago" if created is not None else ""
    since = now - int(p["window_s"] * 1000)
    payers, devices = merchant.peers.count(since, "account:"), merchant.peers.count(since, "device:")
    if "TransactionRow.device_id" in needs.unmapped:  # online payers are known by their devices: none are
        needs.need("TransactionRow.device_id")
    elif payers >= p["min_payers"] and payers / max(devices, 1) >= p["payers_per_device"]:
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


def evaluate_all(
    inp: ScoringInput, params: Mapping[str, Params], unmapped: Collection[str] = frozenset()
) -> Evaluation:
    """Run the rules named in ``params`` (the enabled ones, with their parameters): their hits, most
    severe first, and one ``Skip`` per rule that did not fire for want of an unknown field
    (``unmapped``: the fields the worker's mapping leaves out, see ``unmapped_fields``)."""
    hits: list[Hit] = []
    skipped: list[Skip] = []
    needs = Needs(unmapped)  # one collector, emptied after each rule that used it (the hot path allocates less)
    for name, rule_params in params.items():
        rule = RULES[name]
        details = rule.check(inp, rule_params, needs)
        hits.extend(Hit(name, rule.severity, Reason(name, detail)) for detail in details)
        if needs.fields:
            if not details:
                skipped.append(Skip(name, Reason(SKIPPED, needs.detail(name))))
            needs.fields = {}
    return Evaluation(sorted(hits, key=lambda h: -SEVERITIES.index(h.severity)), skipped)


def evaluate(inp: ScoringInput, params: Mapping[str, Params], unmapped: Collection[str] = frozenset()) -> list[Hit]:
    """The hits of ``evaluate_all``."""
    return evaluate_all(inp, params, unmapped).hits
