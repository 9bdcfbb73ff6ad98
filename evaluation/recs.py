"""Offline recommendation metrics on a time split: the R-GCN + DistMult recommender beside a
popularity and a matrix-factorisation baseline, trained and measured in one run.

The split is by time, never at random: interactions before ``t70`` train, ``t70..t80`` pick the
epochs (then models are refit on everything before ``t80``), and the test window after ``t80`` is
what is measured. Each test user is ranked from what was known at ``t80``: the R-GCN from its input
snapshotted at ``t80`` (``training/recs_replay.py``: the worker's own state code), MF from its
learned vector, popularity from counts before ``t80``. Only *warm* users (at least one interaction
before ``t80``) with at least one legitimate interaction after it are measured.

Fraud never teaches the recommender: fraudulent interactions (simulator: reported confirmed fraud
or chargebacks; YelpChi: filtered reviews) are excluded from the training targets of every model
and from the test targets; they stay in the R-GCN's *inputs* (they happened, and the worker's state
holds them too).

Two protocols, both reported:

* ``all``: the test targets are every item the user chose after ``t80``, repeats included (will it
  pay this merchant), nothing excluded from the ranking;
* ``new``: the user's items before ``t80`` are excluded from the ranking and from the targets (the
  recommendation of a merchant it does not use yet); users with no new item are left out.

Recall@K = |top K ∩ targets| / |targets|; NDCG@K with binary gains, ideal DCG over min(K, |targets|).

    fraudgraph evaluate recs-simulator     # benchmarks/results/recs_simulator.json
    fraudgraph evaluate recs-yelpchi       # benchmarks/results/recs_yelpchi.json
"""

from __future__ import annotations

import gzip
import json
import math
import sys
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fraudgraph.evaluation.recs_baselines import popularity, train_mf
from fraudgraph.machine import machine
from fraudgraph.models.recommend import (
    ACCOUNT_TRANSACTIONS,
    MERCHANT_TRANSACTIONS,
    PAID,
    RecsModel,
    UserInput,
    encode_users,
)
from fraudgraph.training.recs_train import RecsConfig, train_recs

REPO = Path(__file__).resolve().parents[1]
K = 10


@dataclass
class TestUser:
    user: Any
    input: UserInput  # as of t80
    targets: set  # legitimate items chosen after t80
    history: set  # items chosen before t80 (any label)


@dataclass
class RecsData:
    """One dataset, split by time, in the shape every model reads."""

    name: str
    items: list  # item ids known at t80, the catalogue every model ranks
    user_width: int
    history_relations: list[str]
    user_mean_widths: dict[str, int]
    item_mean_widths: dict[str, int]
    item_means: dict[str, list]  # relation -> per item (in ``items`` order) mean features or None
    train: list = field(default_factory=list)  # (UserInput, item), legitimate, before t70
    val: list = field(default_factory=list)  # (UserInput, item), legitimate, t70..t80
    pairs_train: list = field(default_factory=list)  # (user, item) for MF, same windows
    pairs_val: list = field(default_factory=list)
    test: list[TestUser] = field(default_factory=list)
    info: dict = field(default_factory=dict)


def ranking_metrics(
    scores: np.ndarray, targets: list[set[int]], exclude: list[set[int]] | None, k: int = K
) -> dict[str, float | None]:
    """Mean Recall@k and NDCG@k over users; ``targets``/``exclude`` are item indices per user."""
    recalls, ndcgs = [], []
    for row, t, ex in zip(scores, targets, exclude or [set()] * len(targets)):
        if not t:
            continue
        row = row.astype(np.float64, copy=True)
        if ex:
            row[list(ex)] = -np.inf
        top = np.argsort(-row, kind="stable")[:k]
        gains = [1.0 if int(i) in t and np.isfinite(row[i]) else 0.0 for i in top]
        recalls.append(sum(gains) / len(t))
        dcg = sum(g / math.log2(r + 2) for r, g in enumerate(gains))
        ideal = sum(1 / math.log2(r + 2) for r in range(min(k, len(t))))
        ndcgs.append(dcg / ideal)
    n = len(recalls)
    return {
        f"recall_at_{k}": round(float(np.mean(recalls)), 4) if n else None,
        f"ndcg_at_{k}": round(float(np.mean(ndcgs)), 4) if n else None,
        "users": n,
    }


def new_model(data: RecsData, dim: int) -> RecsModel:
    model = RecsModel(
        len(data.items), data.user_width, data.history_relations, data.user_mean_widths, data.item_mean_widths, dim
    )
    for rel, rows in data.item_means.items():
        model.set_item_means(rel, rows)
    return model


@torch.no_grad()
def rgcn_scores(model: RecsModel, inputs: list[UserInput], index: dict, batch: int = 1024) -> np.ndarray:
    model.eval()
    out = [model(encode_users(inputs[i : i + batch], model, index)).numpy() for i in range(0, len(inputs), batch)]
    return np.concatenate(out) if out else np.zeros((0, model.num_items))


def compare(data: RecsData, config: RecsConfig = RecsConfig()) -> dict[str, Any]:
    """Train the three models on ``data`` and measure them on its test users."""
    index = {item: i for i, item in enumerate(data.items)}
    timings = {}
    t = time.perf_counter()
    model, rgcn_report = train_recs(lambda: new_model(data, config.dim), index, data.train, data.val, config)
    timings["rgcn"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    mf, mf_users, mf_report = train_mf(data.pairs_train, data.pairs_val, index, config)
    timings["mf"] = round(time.perf_counter() - t, 2)
    pop = popularity([i for _, i in [*data.pairs_train, *data.pairs_val]], index, len(data.items))

    users = data.test
    scores = {
        "popularity": np.tile(pop, (len(users), 1)),
        "rgcn_distmult": rgcn_scores(model, [u.input for u in users], index),
    }
    with torch.no_grad():
        mf_rows = np.tile(pop, (len(users), 1)).astype(np.float64)  # cold users: popularity
        known = [(n, mf_users[u.user]) for n, u in enumerate(users) if u.user in mf_users]
        if known:
            rows, ids = zip(*known)
            mf_rows[list(rows)] = mf(torch.tensor(ids)).numpy()
        scores["matrix_factorisation"] = mf_rows
    # Targets outside the catalogue (items first seen after t80) count against every model alike:
    # each stays in the denominator as its own negative index, which no ranking contains.
    all_targets = [{index.get(i, -1 - n) for n, i in enumerate(sorted(u.targets, key=str))} for u in users]
    history = [{index[i] for i in u.history if i in index} for u in users]
    new_targets = [t - h for t, h in zip(all_targets, history)]
    results = {}
    for name, s in scores.items():
        results[name] = {"all": ranking_metrics(s, all_targets, None), "new": ranking_metrics(s, new_targets, history)}
    return {
        "results_test": results,
        "train_seconds": timings,
        "model_info": {
            "rgcn_distmult": {k: v for k, v in rgcn_report.items() if k != "history"},
            "rgcn_history": rgcn_report["history"],
            "matrix_factorisation": mf_report,
        },
        "config": asdict(config),
    }


def _targets_in(users: list[TestUser]) -> dict[str, Any]:
    return {
        "test_users": len(users),
        "test_targets": sum(len(u.targets) for u in users),
        "mean_history_items": round(float(np.mean([len(u.history) for u in users])), 2) if users else None,
    }


# --------------------------------------------------------------------------------------- simulator


def simulator_data(customers: int = 400, hours: float = 48.0, seed: int = 3, fraud_rate: float = 0.03) -> RecsData:
    """A seeded simulator run through the Debezium encoding, decoder and ``apply_event``."""
    from fraudgraph.connectors import events as ev
    from fraudgraph.models import features as fx
    from fraudgraph.settings import Settings
    from fraudgraph.stack.simulator.config import SimConfig
    from fraudgraph.training import replay as rp
    from fraudgraph.training.recs_replay import new_account_input, recs_replay

    settings = Settings()
    sim = SimConfig(customers=customers, duration_s=hours * 3600, seed=seed, fraud_rate=fraud_rate)
    events = rp.event_time_order(rp.decoded(rp.simulator_records(sim, settings), settings))
    times = sorted(
        e.position.ts_ms for e in events if isinstance(e, ev.TransactionCreated) and e.merchant_id is not None
    )
    t70, t80 = times[int(0.7 * len(times))], times[int(0.8 * len(times))]
    log = recs_replay(events, snapshot_at_ms=t80)
    items = [m for m in log.merchants if m in log.merchant_means_at]
    data = RecsData(
        "simulator",
        items,
        fx.FEATURE_WIDTHS["Account"],
        [PAID],
        {ACCOUNT_TRANSACTIONS: fx.FEATURE_WIDTHS["Transaction"]},
        {MERCHANT_TRANSACTIONS: fx.FEATURE_WIDTHS["Transaction"]},
        {MERCHANT_TRANSACTIONS: [log.merchant_means_at[m] for m in items]},
    )
    targets, fraud = defaultdict(set), 0
    for p in log.payments:
        if log.fraud(p.transaction_id):
            fraud += 1
            continue
        if p.ts_ms < t70:
            data.train.append((p.user, p.merchant_id))
            data.pairs_train.append((p.account_id, p.merchant_id))
        elif p.ts_ms < t80:
            data.val.append((p.user, p.merchant_id))
            data.pairs_val.append((p.account_id, p.merchant_id))
        else:
            targets[p.account_id].add(p.merchant_id)
    for account, t in sorted(targets.items()):
        user = log.accounts_at.get(account, new_account_input())
        if user.items():  # warm users only
            data.test.append(TestUser(account, user, t, user.items()))
    data.info = {
        "simulator": {"customers": customers, "hours": hours, "seed": seed, "fraud_rate": fraud_rate},
        "payments": len(log.payments),
        "fraudulent_payments_excluded": fraud,
        "merchants": len(items),
        "accounts": len(log.accounts_at),
        "cut_ms": {"t70": t70, "t80": t80},
        **_targets_in(data.test),
    }
    return data


# ----------------------------------------------------------------------------------------- YelpChi


def rated(r: float) -> str:
    return f"Product:rev_RATED_{int(round(r))}:User"


def yelpchi_data(source: str | None = None) -> RecsData:
    """YelpChi reviews as user -> product interactions, five relations by star rating (the R-GCN's
    relations: a 1-star review and a 5-star review say different things about the user). A user's
    input for a review holds only reviews of earlier *days* (same-day order is unknown)."""
    from fraudgraph.evaluation.yelpchi_data import DEFAULT_YELPCHI_SOURCE, RAW_FILE

    path = Path(source or DEFAULT_YELPCHI_SOURCE) / RAW_FILE
    rows = []
    with gzip.open(path, "rt") as fh:
        for line in fh:
            user, product, rating, label, date = line.split()
            rows.append((date, user, product, float(rating), label == "-1"))
    rows.sort(key=lambda r: r[0])  # stable: file order within a day
    dates = [r[0] for r in rows]
    d70, d80 = dates[int(0.7 * len(rows))], dates[int(0.8 * len(rows))]
    relations = [rated(r) for r in range(1, 6)]
    items = list(dict.fromkeys(r[2] for r in rows if r[0] < d80))
    data = RecsData("yelpchi", items, 2, relations, {}, {}, {})

    def user_input(past: list[tuple]) -> UserInput:
        history: dict[str, dict] = {rel: {} for rel in relations}
        for _, _, product, rating, _ in past:
            h = history[rated(rating)]
            h[product] = h.get(product, 0.0) + 1.0
        return UserInput([1.0, math.log1p(len(past))], history, {})

    by_user: dict[str, list[tuple]] = defaultdict(list)
    for r in rows:
        by_user[r[1]].append(r)
    fraud, timed = 0, defaultdict(list)
    for user, reviews in by_user.items():
        before = [r for r in reviews if r[0] < d80]
        targets = set()
        for n, r in enumerate(reviews):
            date, _, product, _, spam = r
            if spam:
                fraud += 1
                continue
            if date >= d80:
                targets.add(product)
                continue
            past = [p for p in reviews[:n] if p[0] < date]
            window = "train" if date < d70 else "val"
            timed[window].append((date, user_input(past), product, user))
        if before and targets:
            data.test.append(TestUser(user, user_input(before), targets, {r[2] for r in before}))
    for window, pairs in (("train", "pairs_train"), ("val", "pairs_val")):
        ordered = sorted(timed[window], key=lambda e: e[0])  # time order, as the simulator's windows
        getattr(data, window).extend((u, product) for _, u, product, _ in ordered)
        getattr(data, pairs).extend((user, product) for _, _, product, user in ordered)
    data.info = {
        "reviews": len(rows),
        "users": len(by_user),
        "products": len(items),
        "fraudulent_reviews_excluded": fraud,
        "cut_dates": {"d70": d70, "d80": d80},
        **_targets_in(data.test),
    }
    return data


# ------------------------------------------------------------------------------------------ report


def format_table(results: dict) -> str:
    lines = [f"{'model':22s} {'R@10 all':>9s} {'N@10 all':>9s} {'R@10 new':>9s} {'N@10 new':>9s}"]
    for name, r in results.items():
        a, n = r["all"], r["new"]
        lines.append(
            f"{name:22s} {a['recall_at_10']:9.4f} {a['ndcg_at_10']:9.4f} {n['recall_at_10']:9.4f} {n['ndcg_at_10']:9.4f}"
        )
    return "\n".join(lines)


def evaluate(
    dataset: str, seed: int = 0, out: str | None = None, command: str | None = None, config: RecsConfig | None = None
) -> dict:
    t0 = time.perf_counter()
    data = simulator_data() if dataset == "simulator" else yelpchi_data()
    load_s = time.perf_counter() - t0
    torch.manual_seed(seed)
    report = compare(data, config or RecsConfig(seed=seed))
    print(format_table(report["results_test"]), flush=True)
    report = {
        "benchmark": f"recs_{dataset}",
        "command": command or "python -m fraudgraph.evaluation.recs " + " ".join(sys.argv[1:]),
        "machine": machine("cpu"),
        "data": data.info,
        "split": "time: train < t70 <= validation (epochs) < t80 <= test; models refit on < t80",
        **report,
        "load_seconds": round(load_s, 2),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    path = Path(out) if out else REPO / "benchmarks" / "results" / f"recs_{dataset}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return report


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", choices=["simulator", "yelpchi"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    a = p.parse_args()
    evaluate(a.dataset, a.seed, a.out)
