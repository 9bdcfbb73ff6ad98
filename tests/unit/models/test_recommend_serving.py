"""Account state for recommendations, the point-in-time replay, the recs registry and server, and
the query answer (parsing, errors, exclusions, risk) with the worker's state code and a real model."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
import torch

from fraudgraph.connectors import events as ev
from fraudgraph.models import features as fx
from fraudgraph.models.recommend import PAID, RiskParams, account_input
from fraudgraph.models.recs_registry import RecsRegistry
from fraudgraph.models.recs_serving import RecsServer
from fraudgraph.models.registry import RegistryError
from fraudgraph.streams.queries import InvalidRequest
from fraudgraph.streams.recommendations import answer_batch, parse_request
from fraudgraph.streams.state import MERCHANTS_PER_ACCOUNT, NodeState, Source, apply_event, node_key
from fraudgraph.training.recs_fit import new_bank_model
from fraudgraph.training.recs_replay import recs_replay

T0 = datetime(2025, 3, 3, 8, 0, tzinfo=UTC)


class Store(dict):
    def put(self, state: NodeState) -> None:
        self[state.key] = state


def pos(n: int) -> ev.SourcePosition:
    return ev.SourcePosition(
        lsn=1000 + n, tx_id=n, ts_ms=int((T0 + timedelta(seconds=n)).timestamp() * 1000), snapshot=False
    )


def payment(n: int, account: int, merchant: int | None, tx: int | None = None) -> ev.TransactionCreated:
    at = T0 + timedelta(seconds=n)
    return ev.TransactionCreated(
        position=pos(n),
        transaction_id=tx or n,
        account_id=account,
        kind="card_payment",
        amount=Decimal("12.50"),
        currency="EUR",
        merchant_id=merchant,
        counterparty_account_id=None if merchant else 99,
        device_id=None,
        ip=None,
        status="pending",
        created_at=at,
        updated_at=at,
    )


def report(n: int, tx: int) -> ev.FraudReported:
    return ev.FraudReported(
        position=pos(n), report_id=n, transaction_id=tx, kind="confirmed_fraud", reported_at=T0 + timedelta(seconds=n)
    )


def apply_all(events, store=None, topic: str = "t") -> Store:
    store = store if store is not None else Store()
    for i, e in enumerate(events):
        apply_event(e, Source(topic, 0, i, 0), store)
    return store


def test_account_state_counts_its_merchants_bounded_and_replays_change_nothing():
    events = [payment(1, 7, 3), payment(2, 7, 3), payment(3, 7, 5), payment(4, 7, None)]
    store = apply_all(events)
    merchants = store[node_key("Account", 7)].merchants
    assert {m: c for m, (c, _) in merchants.items()} == {"3": 2, "5": 1}
    for i, e in enumerate(events):  # the same offsets again: a replay
        apply_event(e, Source("t", 0, i, 0), store)
    assert {m: c for m, (c, _) in store[node_key("Account", 7)].merchants.items()} == {"3": 2, "5": 1}
    many = apply_all([payment(10 + i, 8, 100 + i) for i in range(MERCHANTS_PER_ACCOUNT + 5)])
    kept = many[node_key("Account", 8)].merchants
    assert len(kept) == MERCHANTS_PER_ACCOUNT and "100" not in kept and str(100 + MERCHANTS_PER_ACCOUNT + 4) in kept
    # a state written before the field existed still loads
    raw = orjson.loads(store[node_key("Account", 7)].to_json())
    del raw["merchants"]
    assert NodeState.from_json(orjson.dumps(raw)).merchants == {}
    assert NodeState.from_json(store[node_key("Account", 7)].to_json()).merchants == merchants


def test_account_input_reads_history_and_transaction_means():
    store = apply_all([payment(1, 7, 3), payment(2, 7, 3), payment(3, 7, 5)])
    user = account_input(store[node_key("Account", 7)])
    assert user.history == {PAID: {3: 2.0, 5: 1.0}}
    assert user.features == fx.account_features(None)
    assert len(user.means["Transaction:rev_INITIATED:Account"]) == fx.FEATURE_WIDTHS["Transaction"]


def test_replay_snapshots_the_account_before_its_payment():
    log = recs_replay([payment(1, 7, 3), payment(2, 7, 5), payment(3, 8, 5), report(4, 2)], snapshot_at_ms=pos(2).ts_ms)
    first, second, third = log.payments
    assert first.user.history == {PAID: {}} and first.merchant_id == 3  # not its own target
    assert second.user.history == {PAID: {3: 1.0}}
    assert third.user.history == {PAID: {}}
    assert log.fraud(2) and not log.fraud(1)
    assert log.accounts_at[7].history == {PAID: {3: 1.0}}  # as of the snapshot, before payment 2
    assert log.merchants == [3, 5]


def bank_model(store: Store, items: list[int], seed: int = 0):
    class _Log:
        states = store

    torch.manual_seed(seed)
    return new_bank_model(_Log(), items, dim=8)


def test_registry_round_trip_and_server_candidates_match_the_model(tmp_path):
    store = apply_all([payment(1, 7, 3), payment(2, 7, 5), payment(3, 8, 6)])
    items = [3, 5, 6, 9]
    model = bank_model(store, items)
    model.item_risk.copy_(torch.tensor([0.0, 0.5, 0.0, 0.1]))
    registry = RecsRegistry(tmp_path / "recs")
    card = registry.register(model, {"items": items, "metrics": {"x": 1}, "trained_on": {"source": "test"}})
    assert registry.current_version() == card.version and card.version.startswith("recs-")
    server = RecsServer(registry, "cpu", reload_s=3600)
    assert asyncio.run(server.check_for_new_version())
    loaded = server.loaded
    assert loaded.prior == {3: 0.0, 5: 0.5, 6: 0.0, 9: pytest.approx(0.1)}
    user = account_input(store[node_key("Account", 7)])
    got = loaded.candidates([user], [set()], 4)[0]
    from fraudgraph.models.recommend import encode_users

    with torch.no_grad():
        want = model(encode_users([user], model, {m: i for i, m in enumerate(items)}))[0]
    assert [m for m, _ in got] == [items[i] for i in torch.argsort(want, descending=True).tolist()]
    assert [s for _, s in got] == pytest.approx(sorted(want.tolist(), reverse=True), abs=1e-5)
    assert [m for m, _ in loaded.candidates([user], [{3, 5, 42}], 4)[0]] == [m for m, _ in got if m not in (3, 5)]
    # a card for other features is refused, and the server keeps what it had
    other = json.loads((tmp_path / "recs" / card.version / "card.json").read_text())
    other["feature_spec"] = "v0"
    (tmp_path / "recs" / "bad").mkdir()
    (tmp_path / "recs" / "bad" / "card.json").write_text(json.dumps(other))
    with pytest.raises(RegistryError):
        registry.load("bad")
    registry.promote("bad")
    assert not asyncio.run(server.check_for_new_version()) and server.version == card.version


@pytest.mark.parametrize(
    "raw,error",
    [
        (None, "empty"),
        (b"[1]", "JSON object"),
        (b'{"account_id": 1}', "request_id"),
        (b'{"request_id": "r", "account_id": -1}', "account_id"),
        (b'{"request_id": "r"}', "account_id is required"),
        (b'{"request_id": "r", "account_id": 1, "k": 0}', "k must"),
        (b'{"request_id": "r", "account_id": 1, "k": 101}', "k must"),
        (b'{"request_id": "r", "account_id": 1, "k": true}', "k must"),
        (b'{"request_id": "r", "account_id": 1, "exclude_used": "yes"}', "exclude_used"),
        (b'{"request_id": "r", "account_id": 1, "max_risk": 0.5}', "max_risk"),
        (b'{"request_id": "r", "account_id": 1, "max_risk": 0}', "max_risk"),
        (b'{"request_id": "r", "account_id": 1, "colour": "red"}', "unknown fields"),
    ],
)
def test_invalid_requests_are_named(raw, error):
    with pytest.raises(InvalidRequest, match=error):
        parse_request(raw, 100, 0.2)


def test_valid_request_defaults():
    req = parse_request(b'{"request_id": "r", "account_id": 7}', 100, 0.2)
    assert (req.k, req.exclude_used, req.max_risk) == (10, False, 0.2)
    req = parse_request(
        b'{"request_id": "r", "account_id": 7, "k": 3, "exclude_used": true, "max_risk": 0.05}', 100, 0.2
    )
    assert (req.k, req.exclude_used, req.max_risk) == (3, True, 0.05)


def test_answers_every_request_once_with_errors_exclusions_and_risk(tmp_path):
    # account 7 pays 3 and 5; merchant 6 is flagged by three victims' confirmed-fraud reports
    events = [
        payment(1, 7, 3),
        payment(2, 7, 5),
        payment(3, 8, 6, tx=50),
        payment(4, 9, 6, tx=51),
        payment(5, 10, 6, tx=52),
        payment(6, 11, 4),
        payment(7, 11, 2),
    ]
    store = apply_all(events)
    items = [2, 3, 4, 5, 6]
    model = bank_model(store, items, seed=3)
    with torch.no_grad():  # make the flagged merchant everyone's best candidate
        model.item_bias.copy_(torch.tensor([0.0, 0.0, 0.0, 0.0, 100.0]))
    registry = RecsRegistry(tmp_path / "recs")
    server = RecsServer(registry, "cpu", reload_s=3600)
    raws = [
        b'{"request_id": "a", "account_id": 7, "k": 5}',
        b"not json",
        b'{"request_id": "b", "account_id": 404}',
        b'{"request_id": "c", "account_id": 7, "k": 5, "exclude_used": true}',
    ]

    replies = asyncio.run(answer_batch(raws, store, server, 100))  # nothing registered yet
    assert [r["status"] for r in replies] == ["model_unavailable", "invalid_request", "not_found", "model_unavailable"]
    assert replies[1]["request_id"] is None and "not JSON" in replies[1]["error"]

    registry.register(model, {"items": items})
    asyncio.run(server.check_for_new_version())
    replies = asyncio.run(answer_batch(raws, store, server, 100))
    a, c = replies[0], replies[3]
    assert a["status"] == "ok" and [m["merchant_id"] for m in a["merchants"]][0] == 6  # not flagged yet: top
    assert len(a["merchants"]) == 5 and a["model_version"] == registry.current_version()
    assert {m["merchant_id"] for m in c["merchants"]} == {2, 4, 6} and c["excluded"]["used"] == 2

    apply_all([report(20 + i, tx) for i, tx in enumerate((50, 51, 52))], store, topic="reports")
    replies = asyncio.run(answer_batch(raws, store, server, 100, RiskParams()))
    a, c = replies[0], replies[3]
    assert 6 not in [m["merchant_id"] for m in a["merchants"]] and len(a["merchants"]) == 4
    assert a["excluded"]["risk"] == 1 and {m["merchant_id"] for m in c["merchants"]} == {2, 4}
    scores = [m["score"] for m in a["merchants"]]
    assert scores == sorted(scores, reverse=True)
