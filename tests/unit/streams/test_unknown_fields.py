"""Fields a bank's mapping leaves out, or a row leaves null, are unknown in every stage: decoded as
None, never filled in and never a crash (state, features, rules, graph plan, model request); a rule
that needs one does not fire and says why, without changing the decision; complete data is untouched."""

from __future__ import annotations

import json
import tomllib
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import torch

from fraudgraph.connectors import events as ev
from fraudgraph.connectors.decoder import decode
from fraudgraph.connectors.mapping import UNKNOWN_FIELDS, _declaring, event_field_types, load_mapping, parse_mapping
from fraudgraph.graph.cypher import CYPHER, plan_batch
from fraudgraph.models import features as fx
from fraudgraph.models.batch import encode
from fraudgraph.models.hetero import FRAUD_RELATIONS
from fraudgraph.models.rgcn import HeteroRGCN
from fraudgraph.streams.decision import decide, evaluate_rules
from fraudgraph.streams.policy import load_policy
from fraudgraph.streams.rules import SKIPPED, evaluate, evaluate_all, unmapped_fields
from fraudgraph.streams.scoring import ScoringInput, model_request
from fraudgraph.streams.state import MODEL_INPUTS, Source, apply_event

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "debezium" / "string-schemaless"
REFERENCE = tomllib.loads((Path(load_mapping.__code__.co_filename).parent / "mappings" / "bank.toml").read_text())
POLICY = load_policy()
PARAMS = POLICY.rule_params
TABLES = ("customers", "accounts", "merchants", "devices", "logins", "profile_changes", "transactions", "fraud_reports")
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
MS0 = int(T0.timestamp() * 1000)
MIN, HOUR, DAY = 60_000, 3_600_000, 86_400_000


class Store(dict):
    def put(self, state):
        self[state.key] = state


def mapping_without(*left_out: str):
    """The reference mapping with the given ``Event.field``s left out (none given: every optional one)."""
    left_out = left_out or tuple(UNKNOWN_FIELDS)
    data = json.loads(json.dumps(REFERENCE))
    for spec in data["tables"].values():
        classes = {ev.EVENT_TYPES[spec["create"]], ev.EVENT_TYPES[spec["update"]]}
        for section in ("fields", "before"):
            for name in list(spec.get(section, {})):
                declared = {f"{_declaring(cls, name)}.{name}" for cls in classes if name in event_field_types(cls)}
                if declared & set(left_out):
                    del spec[section][name]
    return parse_mapping(data)


def fixture_events(mapping, row_changes: dict[str, dict] | None = None) -> list[ev.DomainEvent]:
    """Every captured create/read/update envelope, decoded with ``mapping`` (rows changed per table)."""
    out = []
    for table in TABLES:
        for path in sorted(FIXTURES.glob(f"{table}.[cru].json")):
            value = json.loads(json.loads(path.read_text())["value"])
            value["after"].update((row_changes or {}).get(table, {}))
            out.append(decode(f"bank.public.{table}", json.dumps(value).encode(), mapping, "string"))
    return sorted(out, key=lambda e: e.position.lsn)


def applied(events):
    store, inputs = Store(), []
    for offset, event in enumerate(events):
        source = Source("t", 0, offset, event.position.ts_ms)
        a = apply_event(event, source, store)
        if a.transaction is not None and not a.replayed:
            inputs.append(ScoringInput(a.transaction, source, {s.key: s for s in a.touched}))
    return store, inputs


# ---- every stage, every optional field unknown ----


def test_every_optional_field_left_out_decodes_applies_scores_and_plans():
    mapping = mapping_without()
    unmapped = unmapped_fields(mapping.present_fields())
    assert unmapped == set(UNKNOWN_FIELDS)
    events = fixture_events(mapping)
    assert {type(e) for e in events} >= {ev.CustomerUpserted, ev.LoginRecorded, ev.TransactionCreated, ev.FraudReported}
    for e in events:
        for name in UNKNOWN_FIELDS:
            cls, field = name.split(".")
            if cls in {k.__name__ for k in type(e).__mro__}:
                assert getattr(e, field) is None, name

    store, inputs = applied(events)
    assert inputs and not any("None" in key for key in store)  # no IP:None, no Device:None
    assert store["Customer:1102"].features == fx.customer_features(None)
    assert store["Account:1102"].features == fx.account_features(None)
    assert store["Account:1102"].attrs["opened_ms"] is None  # unknown: held as None, not made up

    model = HeteroRGCN(dict(fx.FEATURE_WIDTHS), FRAUD_RELATIONS, hidden=8, out_channels=1).eval()
    with torch.no_grad():
        logits, _ = model.score_batch(encode([model_request(inp) for inp in inputs], model).to("cpu", torch.float32))
    assert torch.isfinite(logits).all()
    for inp in inputs:
        result = evaluate_rules(inp, POLICY, unmapped)
        verdict = decide(inp, None, result.hits, POLICY, result.skipped)
        assert verdict.decision in {"approve", "review", "block"}

    plan = plan_batch(events)
    assert plan.statements and not plan.skipped
    for stmt in plan.statements:
        assert stmt.cypher == CYPHER[stmt.kind]  # fixed texts; unknown values travel as null parameters
    logins = next(s for s in plan.statements if s.kind == "upsert_login")
    assert all(row["ip"] is None and row["device_id"] is None for row in logins.rows)
    customers = next(s for s in plan.statements if s.kind == "upsert_customer")
    assert customers.rows[0]["props"]["kyc_level"] is None and customers.rows[0]["t"]["created_at"] is None
    report = next(s for s in plan.statements if s.kind == "upsert_fraud_report")
    assert report.rows[0]["reported_at"] is None


def test_a_null_in_a_mapped_column_is_unknown_too():
    events = fixture_events(
        load_mapping(),
        {"customers": {"kyc_level": None, "country": None}, "accounts": {"opened_at": None, "kind": None}},
    )
    customer = next(e for e in events if isinstance(e, ev.CustomerUpserted))
    assert customer.kyc_level is None and customer.country is None  # decoded, not dead-lettered
    store, _ = applied(events)
    assert store["Customer:1102"].features == fx.customer_features(None) == [1.0, 0.0]
    assert store["Customer:1102"].attrs["kyc_level"] is None
    assert store["Account:1102"].features == fx.account_features(None)
    assert store["Account:1102"].attrs["opened_ms"] is None


def test_known_values_encode_as_before():
    assert fx.FEATURE_SPEC == "v1"
    assert fx.customer_features(2) == [1.0, 2 / 3]
    assert fx.account_features("savings") == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert fx.account_features(None) == [0.0, 0.0, 0.0, 0.0, 1.0]  # unknown: the "other" slot, as a stub's


def test_a_login_without_an_ip_links_no_ip():
    store = Store()
    login = ev.LoginRecorded(ev.SourcePosition(1, None, MS0), 1, 7, "d1", None, True, T0)
    apply_event(login, Source("logins", 0, 0, MS0), store)
    assert set(store) == {"Customer:7", "Device:d1"}
    assert store["Customer:7"].neighbours.counts == {"Device:rev_LOGGED_IN:Customer": 1}


# ---- rules: unknown fields are named, never guessed ----


class World:
    """Events through apply_event, one offset per topic."""

    def __init__(self):
        self.store, self.lsn, self.offsets, self.tid = Store(), 0, {}, 0

    def _apply(self, table, event):
        self.offsets[table] = self.offsets.get(table, -1) + 1
        source = Source(table, 0, self.offsets[table], event.position.ts_ms)
        return apply_event(event, source, self.store), source

    def pos(self, ts):
        self.lsn += 1
        return ev.SourcePosition(lsn=self.lsn, tx_id=None, ts_ms=ts)

    def account(self, account_id, opened_ms: int | None, ts=MS0 - 400 * DAY):
        opened = None if opened_ms is None else datetime.fromtimestamp(opened_ms / 1000, UTC)
        self._apply(
            "accounts", ev.AccountUpserted(self.pos(ts), account_id, account_id, "checking", "EUR", "active", opened)
        )

    def pay(self, account, ts, amount=100, merchant=None, counterparty=None, device="d1", ip="81.0.0.1"):
        self.tid += 1
        at = datetime.fromtimestamp(ts / 1000, UTC)
        kind = "card_payment" if merchant else "transfer"
        t = ev.TransactionCreated(
            self.pos(ts),
            self.tid,
            account,
            kind,
            Decimal(amount),
            "EUR",
            merchant,
            counterparty,
            device,
            ip,
            "pending",
            at,
            at,
        )
        a, source = self._apply("transactions", t)
        return ScoringInput(a.transaction, source, {s.key: s for s in a.touched})


def skipped(inp, unmapped=frozenset(), **params):
    result = evaluate_all(inp, {**PARAMS, **params} if params else PARAMS, unmapped)
    return {s.rule: s.reason for s in result.skipped}, result


def mule_world(opened_ms, device="d1", ip="81.0.0.1"):
    """Account 500 collects from three accounts, then forwards most of it."""
    w = World()
    w.account(500, opened_ms)
    for i in range(3):
        w.account(10 + i, MS0 - 400 * DAY)
        w.pay(10 + i, MS0 + i * MIN, amount=1000, counterparty=500)
    return w, w.pay(500, MS0 + 10 * MIN, amount=2900, counterparty=600, device=device, ip=ip)


def test_mule_with_the_opening_date_unknown_does_not_fire_and_says_why():
    _, forward = mule_world(MS0 - HOUR)
    assert [h.rule for h in evaluate(forward, PARAMS)] == ["mule"]  # known and young: fires

    _, forward = mule_world(None)  # the row says nothing: its first activity is not its opening
    reasons, result = skipped(forward)
    assert "mule" not in [h.rule for h in result.hits]
    assert reasons["mule"].code == SKIPPED
    assert reasons["mule"].detail == "mule: AccountUpserted.opened_at unknown (null in the row)"
    reasons, _ = skipped(forward, unmapped={"AccountUpserted.opened_at"})
    assert reasons["mule"].detail == "mule: AccountUpserted.opened_at unknown (not in the mapping)"


def test_an_account_active_long_ago_is_old_whatever_its_opening_date():
    w = World()
    w.account(500, None)
    w.pay(500, MS0 - 30 * DAY, amount=5, counterparty=42)  # active a month ago: older than a week
    for i in range(3):
        w.pay(10 + i, MS0 + i * MIN, amount=1000, counterparty=500)
    forward = w.pay(500, MS0 + 10 * MIN, amount=2900, counterparty=600)
    reasons, result = skipped(forward)
    assert not result.hits and "mule" not in reasons


def test_an_unmapped_opening_date_is_unknown_before_the_row_arrives_too():
    w = World()  # no account rows at all: the mapping has none to bring
    for i in range(3):
        w.pay(10 + i, MS0 + i * MIN, amount=1000, counterparty=500)
    forward = w.pay(500, MS0 + 10 * MIN, amount=2900, counterparty=600)
    assert [h.rule for h in evaluate(forward, PARAMS)] == ["mule"]  # a complete mapping: first activity stands in
    reasons, result = skipped(forward, unmapped={"AccountUpserted.opened_at"})
    assert not result.hits and reasons["mule"].detail.endswith("opened_at unknown (not in the mapping)")


def test_device_and_ip_rules_say_why_when_the_mapping_has_none():
    unmapped = {"TransactionRow.device_id", "TransactionRow.ip"}
    w = World()
    card_present = w.pay(1, MS0, merchant=5, device=None, ip=None)
    assert not skipped(card_present)[0]  # mapped and null: a payment without a device, nothing unknown
    reasons, _ = skipped(card_present, unmapped)
    assert reasons["shared_device_or_ip"].detail == (
        "shared_device_or_ip: TransactionRow.device_id unknown (not in the mapping), "
        "TransactionRow.ip unknown (not in the mapping)"
    )
    assert set(reasons) == {"shared_device_or_ip", "fraud_proximity", "velocity", "colluding_merchant"}
    assert reasons["velocity"].detail == "velocity: TransactionRow.device_id unknown (not in the mapping)"


def test_velocity_names_the_unknown_online_fields_only_when_the_account_counts_would_fire():
    unmapped = {"TransactionRow.device_id", "TransactionRow.ip"}
    w = World()
    burst = [w.pay(2, MS0 + i * 5_000, amount=2, merchant=5, device=None, ip=None) for i in range(7)]
    assert not evaluate(burst[-1], PARAMS)  # a complete mapping: card-present, not this rule's risk
    reasons, result = skipped(burst[-1], unmapped)
    assert not result.hits
    assert reasons["velocity"].detail == (
        "velocity: TransactionRow.device_id unknown (not in the mapping), TransactionRow.ip unknown (not in the mapping)"
    )


def test_a_payment_to_a_merchant_has_no_unknown_counterparty():
    w = World()
    card = w.pay(1, MS0, merchant=5)
    reasons, _ = skipped(card, {"TransactionRow.counterparty_account_id"})
    assert not reasons  # its payee is the merchant
    transfer = w.pay(1, MS0 + MIN, merchant=None, counterparty=None)
    reasons, _ = skipped(transfer, {"TransactionRow.counterparty_account_id"})
    assert reasons["mule"].detail == "mule: TransactionRow.counterparty_account_id unknown (not in the mapping)"
    assert "counterparty_account_id" in reasons["fraud_proximity"].detail


def test_a_rule_that_fires_is_not_reported_skipped():
    w = World()
    inps = [w.pay(10 + i, MS0 + i * 3_000, merchant=5, device="kit", ip=None) for i in range(8)]
    reasons, result = skipped(inps[-1], {"TransactionRow.ip"})
    assert "velocity" in [h.rule for h in result.hits] and "velocity" not in reasons


# ---- decisions: a skipped rule informs, never decides ----


@pytest.mark.parametrize("score", [None, 0.1, 0.8, 0.99])
def test_skip_reasons_come_last_and_change_no_decision(score):
    from fraudgraph.streams.scoring import ModelOpinion

    _, forward = mule_world(None, device=None, ip=None)
    model = None if score is None else ModelOpinion(score, "m1", [])
    unmapped = {"TransactionRow.device_id", "TransactionRow.ip", "AccountUpserted.opened_at"}
    result = evaluate_all(forward, PARAMS, unmapped)
    assert result.skipped
    plain = decide(forward, model, result.hits, POLICY)
    informed = decide(forward, model, result.hits, POLICY, result.skipped)
    assert informed.decision == plain.decision and informed.score == plain.score
    assert informed.reasons == plain.reasons + [s.reason for s in result.skipped]
    for lists in (
        {"allow": replace(POLICY.allow, accounts=frozenset({500}))},
        {"deny": replace(POLICY.deny, accounts=frozenset({500}))},
    ):
        policy = replace(POLICY, **lists)
        a, b = decide(forward, model, result.hits, policy), decide(forward, model, result.hits, policy, result.skipped)
        assert a.decision == b.decision and b.reasons == a.reasons + [s.reason for s in result.skipped]
        assert SKIPPED not in b.reasons[0].detail  # an allow list's "overrides ... from" names drivers only


def test_skipped_rules_do_not_count_towards_combining():
    _, forward = mule_world(None, device=None, ip=None)
    unmapped = set(UNKNOWN_FIELDS)
    result = evaluate_all(forward, PARAMS, unmapped)
    assert len(result.skipped) >= POLICY.review_at_rules  # more skipped rules than it takes to combine
    verdict = decide(forward, None, result.hits, POLICY, result.skipped)
    assert "rules_combined" not in [r.code for r in verdict.reasons]
    assert verdict.decision == decide(forward, None, result.hits, POLICY).decision


def test_a_complete_mapping_skips_nothing():
    assert unmapped_fields(load_mapping().present_fields()) == frozenset()
    assert unmapped_fields(None) == frozenset()
    _, inputs = applied(fixture_events(load_mapping()))
    for inp in inputs:
        assert evaluate_all(inp, PARAMS, frozenset()).skipped == []


# ---- which fields reach a model ----


def _model_inputs(events):
    store, _ = applied(events)
    return {k: (s.features, s.neighbours.counts, s.neighbours.sums) for k, s in store.items()}


@pytest.fixture(scope="module")
def simulated():
    from fraudgraph.settings import load_settings
    from fraudgraph.stack.simulator.config import SimConfig
    from fraudgraph.training.replay import decoded, event_time_order, simulator_records

    settings = load_settings({})
    config = SimConfig(customers=60, duration_s=3 * 3600, start=T0, fraud_rate=0.1, seed=3)
    return event_time_order(decoded(simulator_records(config, settings), settings))


def _without(events, name):
    cls, field = name.split(".")
    return [replace(e, **{field: None}) if cls in {k.__name__ for k in type(e).__mro__} else e for e in events]


def test_model_inputs_are_exactly_the_fields_that_change_features_or_neighbour_sums(simulated):
    """Unknown outside MODEL_INPUTS: every feature and neighbour sum as with the field; inside: some differ."""
    complete = _model_inputs(simulated)
    for name in UNKNOWN_FIELDS:
        changed = _model_inputs(_without(simulated, name)) != complete
        assert changed == (name in MODEL_INPUTS), name


# ---- the worker: rules told what the mapping leaves out, a model needing it refused ----


def test_the_worker_names_skipped_rules_and_refuses_a_model_trained_with_fields_it_lacks(tmp_path):
    import asyncio

    from fraudgraph.models.registry import ModelRegistry, card_for
    from fraudgraph.models.serving import ModelServer
    from fraudgraph.streams.decider import NO_MODEL, Decider
    from fraudgraph.streams.decision import MODEL_UNAVAILABLE
    from fraudgraph.streams.policy import PolicySource

    torch.manual_seed(0)
    model = HeteroRGCN(dict(fx.FEATURE_WIDTHS), FRAUD_RELATIONS, hidden=8, out_channels=1).eval()
    trained_on = {"source": "test", "fields": sorted(MODEL_INPUTS)}
    version = (
        ModelRegistry(tmp_path)
        .register(model, card_for(model, threshold=0.5, target_fpr=0.01, trained_on=trained_on))
        .version
    )
    _, forward = mule_world(MS0 - HOUR, device=None, ip=None)

    def decided(present):
        async def run():
            server = ModelServer(ModelRegistry(tmp_path), "cpu", reload_s=3600, fields=present)
            await server.start()
            try:
                return await Decider(server, PolicySource(), present).decide([forward])
            finally:
                await server.stop()

        return asyncio.run(run())[0]

    complete = decided(load_mapping().present_fields())
    assert complete.model_version == version and SKIPPED not in [r.code for r in complete.verdict.reasons]

    lacking = decided(mapping_without("TransactionRow.device_id", "TransactionRow.ip").present_fields())
    codes = [r.code for r in lacking.verdict.reasons]
    assert lacking.model_version == NO_MODEL and codes[0] == "mule" and MODEL_UNAVAILABLE in codes
    assert codes.index(MODEL_UNAVAILABLE) < codes.index(SKIPPED)  # information comes last
    assert (
        "shared_device_or_ip: TransactionRow.device_id unknown (not in the mapping), "
        "TransactionRow.ip unknown (not in the mapping)"
    ) in [r.detail for r in lacking.verdict.reasons if r.code == SKIPPED]
    assert lacking.verdict.decision == "review"  # the mule finding decides; the skipped rules do not
