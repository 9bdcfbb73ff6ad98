"""The recommender as ``fraudgraph train`` fits it: from the same point-in-time replay as the fraud
model, with the fraud model's opinion of every merchant stored beside the merchant vectors.

* Examples: every merchant payment, its account's input snapshotted just before it
  (``training/recs_replay.py``); payments reported as fraud are not targets (the recommender must
  not learn that victims "like" the merchant that robbed them).
* Catalogue: every merchant the log shows, its mean payment features as of the log's end.
* Epochs: chosen on the last ``val_frac`` of payments (by time), then the model is refit on all.
* Risk prior (``RecsModel.item_risk``): per merchant, the mean fraud probability the freshly
  trained fraud model gives its payments. Served beside the live reports (``merchant_risk``), so a
  merchant whose payments look fraudulent is held back even before any report arrives.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch

from fraudgraph.connectors import events as ev
from fraudgraph.models import features as fx
from fraudgraph.models.batch import encode
from fraudgraph.models.recommend import ACCOUNT_TRANSACTIONS, MERCHANT_TRANSACTIONS, PAID, RecsModel, merchant_means
from fraudgraph.streams.state import node_key
from fraudgraph.training.recs_replay import RecsReplay, recs_replay
from fraudgraph.training.recs_train import RecsConfig, train_recs


@torch.no_grad()
def fraud_scores(model: Any, examples: Sequence[Any], batch: int = 1024) -> dict[int, float]:
    """Transaction id -> the fraud model's probability, for replay ``Example``s (``training/replay.py``)."""
    model.eval()
    out = {}
    for i in range(0, len(examples), batch):
        chunk = examples[i : i + batch]
        logits, _ = model.score_batch(encode([e.request for e in chunk], model).to("cpu", torch.float32))
        for e, p in zip(chunk, torch.sigmoid(logits[:, 0]).tolist()):
            out[e.transaction_id] = p
    return out


def new_bank_model(log: RecsReplay, items: list[ev.EntityId], dim: int) -> RecsModel:
    model = RecsModel(
        len(items),
        fx.FEATURE_WIDTHS["Account"],
        [PAID],
        {ACCOUNT_TRANSACTIONS: fx.FEATURE_WIDTHS["Transaction"]},
        {MERCHANT_TRANSACTIONS: fx.FEATURE_WIDTHS["Transaction"]},
        dim,
    )
    means = []
    for m in items:
        state = log.states.get(node_key("Merchant", m))
        means.append(merchant_means(state) if state is not None else None)
    model.set_item_means(MERCHANT_TRANSACTIONS, means)
    return model


def risk_prior(log: RecsReplay, items: list[ev.EntityId], scores: dict[int, float]) -> list[float]:
    per: dict[ev.EntityId, list[float]] = defaultdict(list)
    for p in log.payments:
        if p.transaction_id in scores:
            per[p.merchant_id].append(scores[p.transaction_id])
    return [sum(per[m]) / len(per[m]) if per[m] else 0.0 for m in items]


def fit_recommender(
    events: Sequence[ev.DomainEvent],
    config: RecsConfig = RecsConfig(),
    val_frac: float = 0.1,
    scores: dict[int, float] | None = None,
) -> tuple[RecsModel, list[ev.EntityId], dict[str, Any]]:
    """(model, merchant id per item row, report) from events in event-time order."""
    log = recs_replay(events)
    items = list(log.merchants)
    index = {m: i for i, m in enumerate(items)}
    legit = [p for p in log.payments if not log.fraud(p.transaction_id)]
    if not legit:
        raise ValueError("no legitimate merchant payment to learn from")
    cut = int(len(legit) * (1 - val_frac))
    train = [(p.user, p.merchant_id) for p in legit[:cut]]
    val = [(p.user, p.merchant_id) for p in legit[cut:]]
    prior = risk_prior(log, items, scores or {})

    def make() -> RecsModel:
        model = new_bank_model(log, items, config.dim)
        model.item_risk.copy_(torch.tensor(prior))
        return model

    model, report = train_recs(make, index, train, val, config)
    report["payments"] = len(log.payments)
    report["fraudulent_payments_excluded"] = len(log.payments) - len(legit)
    report["merchants"] = len(items)
    report["windows"] = {
        "first_ts_ms": log.payments[0].ts_ms,
        "last_ts_ms": log.payments[-1].ts_ms,
        "validation_from_ts_ms": legit[cut].ts_ms if cut < len(legit) else None,
    }
    return model, items, report
