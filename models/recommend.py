"""Link prediction for recommendations: an R-GCN encoder with a DistMult decoder scoring
account -> merchant "will pay" links, and the pure functions that turn scores into safe top-K lists.

The encoder, and why it is split this way
=========================================

A two-layer relational GCN around the *user* (an account; a YelpChi reviewer)::

    layer 1, every item m (merchant, product):
        h1(m) = relu( E[m] @ R1 + b1 + sum_s mean-features_s(m) @ F_s )
    layer 2, the user u (the link's source):
        z(u)  = x_u @ R2 + b2 + sum_s mean-features_s(u) @ G_s + sum_r mean_{m in N_r(u)} h1(m) @ W_r
    items' output:  z(m) = h1(m) @ Q + c
    decoder (DistMult, one relation "will pay"):  score(u, m) = sum_i z(u)_i * rel_i * z(m)_i + bias_m
                                                               + sum_r a_r * log(1 + count_r(u, m))

``E`` is a learned vector per item (merchants carry no informative raw features of their own:
``features.constant_features``), ``mean-features_s`` are per-relation means of neighbours' raw
features (a merchant's transactions, an account's transactions: the ``NeighbourSums`` the worker
already keeps), ``N_r(u)`` the items the user interacted with under relation r, counted with
multiplicity (a merchant paid five times weighs five times, as five parallel edges do in a full-graph
mean). Every relation has its own weight (``F_s``, ``G_s``, ``W_r``) and a self-loop (``R``): the
R-GCN layer of ``models/rgcn.py``, written out for this bipartite shape. The last decoder term is
the link's own multiplicity when it already exists (one learned weight per relation): "will pay"
includes paying again, and a mean over a long history blurs which merchants are the account's own.

Why users are inductive and items are not: the user side needs only the user's own state (features,
feature sums and its bounded merchant counts, ``NodeState.merchants``), so an account's embedding is
computed at query time from its *latest* state, with no subgraph read. The item side is a matrix
computed once per model version (``item_vectors``) over all items known at training, which is what
makes top-K one batched matrix product. A merchant that appears after training is not recommended
until the next training (its payments still count in no one's history, and nothing breaks).

Top-K with exclusions and fraud risk
====================================

``top_candidates`` masks the items a request excludes and takes the best ``n`` by score (on the
model's device). ``rerank`` then applies fraud risk, read from the merchants' live state at query
time (``merchant_risk``: the fraud model's per-merchant prior from training and the confirmed
reports since): a merchant at or above ``max_risk`` is dropped, one below it is down-ranked by
adding ``log(1 - risk)`` to its score (its odds of being a good recommendation shrink with the odds
that it is fraudulent). So a flagged colluding merchant can never be recommended, whatever its score.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

# The simulator/bank graph, as the recommender reads it from account and merchant state.
PAID = "Merchant:rev_PAID:Account"  # items an account paid (NodeState.merchants); one "will pay" relation
ACCOUNT_TRANSACTIONS = "Transaction:rev_INITIATED:Account"  # the account's transactions' mean raw features
MERCHANT_TRANSACTIONS = "Transaction:PAYS:Merchant"  # the merchant's payments' mean raw features


@dataclass
class UserInput:
    """What the encoder reads about one user: own raw features; per history relation, item id ->
    weight (interaction count); per feature relation, the mean raw features of its neighbours
    (absent: the user has none under it)."""

    features: list[float]
    history: dict[str, dict[Any, float]] = field(default_factory=dict)
    means: dict[str, list[float]] = field(default_factory=dict)

    def items(self) -> set[Any]:
        return {i for h in self.history.values() for i in h}


def account_input(state: Any) -> UserInput:
    """An account's ``UserInput`` from its worker ``NodeState`` (duck-typed: ``features``,
    ``neighbours``, ``merchants``): what it paid, and the mean of its transactions' raw features."""
    n = state.neighbours
    count = n.counts.get(ACCOUNT_TRANSACTIONS, 0)
    means = {ACCOUNT_TRANSACTIONS: [v / count for v in n.sums[ACCOUNT_TRANSACTIONS]]} if count else {}
    history = {int(m): float(c) for m, (c, _) in getattr(state, "merchants", {}).items()}
    return UserInput(list(state.features), {PAID: history}, means)


def merchant_means(state: Any) -> list[float] | None:
    n = state.neighbours
    count = n.counts.get(MERCHANT_TRANSACTIONS, 0)
    return [v / count for v in n.sums[MERCHANT_TRANSACTIONS]] if count else None


@dataclass
class EncodedUsers:
    """``x`` (B, width); ``means[s]`` (B, width_s) and ``has[s]`` (B,); history edges
    ``edge_user`` (batch position) <- ``edge_item`` (item index) under ``edge_relation`` (index into
    the model's history relations), weighted ``edge_norm`` = count / the user's total under it;
    ``edge_count`` is the count itself."""

    x: Tensor
    means: dict[str, Tensor]
    has: dict[str, Tensor]
    edge_user: Tensor
    edge_item: Tensor
    edge_relation: Tensor
    edge_norm: Tensor
    edge_count: Tensor

    def to(self, device: torch.device | str) -> EncodedUsers:
        return EncodedUsers(
            self.x.to(device),
            {k: v.to(device) for k, v in self.means.items()},
            {k: v.to(device) for k, v in self.has.items()},
            self.edge_user.to(device),
            self.edge_item.to(device),
            self.edge_relation.to(device),
            self.edge_norm.to(device),
            self.edge_count.to(device),
        )


class RecsModel(nn.Module):
    """Encoder + DistMult decoder. ``item_means[s]`` (M, width_s) are the items' per-relation mean
    raw features as of training (buffers, saved with the weights), ``item_risk`` (M,) the fraud
    model's per-item prior (0 where unknown)."""

    item_risk: Tensor  # a buffer, registered in __init__

    def __init__(
        self,
        num_items: int,
        user_width: int,
        history_relations: Sequence[str],
        user_mean_widths: Mapping[str, int],
        item_mean_widths: Mapping[str, int],
        dim: int = 32,
    ):
        super().__init__()
        self.num_items, self.user_width, self.dim = num_items, user_width, dim
        self.history_relations = list(history_relations)
        self.user_mean_widths, self.item_mean_widths = dict(user_mean_widths), dict(item_mean_widths)
        self.item_embedding = nn.Embedding(num_items, dim)
        nn.init.normal_(self.item_embedding.weight, std=0.1)
        self.item_root = nn.Linear(dim, dim)
        self.item_feature = nn.ModuleDict(
            {_m(s): nn.Linear(w, dim, bias=False) for s, w in self.item_mean_widths.items()}
        )
        self.user_root = nn.Linear(user_width, dim)
        self.user_feature = nn.ModuleDict(
            {_m(s): nn.Linear(w, dim, bias=False) for s, w in self.user_mean_widths.items()}
        )
        self.user_history = nn.ModuleDict({_m(r): nn.Linear(dim, dim, bias=False) for r in self.history_relations})
        self.item_out = nn.Linear(dim, dim)
        self.relation = nn.Parameter(torch.ones(dim))  # DistMult's diagonal for "will pay"
        self.item_bias = nn.Parameter(torch.zeros(num_items))
        self.repeat = nn.Parameter(torch.zeros(len(self.history_relations)))  # a_r: weight of an existing link
        for s, w in self.item_mean_widths.items():
            self.register_buffer(f"means_{_m(s)}", torch.zeros(num_items, w))
            self.register_buffer(f"has_{_m(s)}", torch.zeros(num_items))
        self.register_buffer("item_risk", torch.zeros(num_items))

    def set_item_means(self, relation: str, rows: Sequence[Sequence[float] | None]) -> None:
        width = self.item_mean_widths[relation]
        means = torch.tensor([list(r) if r is not None else [0.0] * width for r in rows], dtype=torch.float32)
        getattr(self, f"means_{_m(relation)}").copy_(means.reshape(self.num_items, width))
        getattr(self, f"has_{_m(relation)}").copy_(torch.tensor([r is not None for r in rows], dtype=torch.float32))

    def item_hidden(self) -> Tensor:
        """Layer 1 of every item: (M, dim)."""
        z = self.item_root(self.item_embedding.weight)
        for s in self.item_mean_widths:
            key = _m(s)
            z = z + self.item_feature[key](getattr(self, f"means_{key}")) * getattr(self, f"has_{key}").unsqueeze(1)
        return torch.relu(z)

    def item_vectors(self, h1: Tensor | None = None) -> Tensor:
        """Every item's output embedding times the decoder's diagonal: scores are ``z_u @ this.T + bias``."""
        h1 = self.item_hidden() if h1 is None else h1
        return self.item_out(h1) * self.relation

    def user_vectors(self, batch: EncodedUsers, h1: Tensor) -> Tensor:
        z = self.user_root(batch.x)
        for s in self.user_mean_widths:
            key = _m(s)
            z = z + self.user_feature[key](batch.means[s]) * batch.has[s].unsqueeze(1)
        if batch.edge_user.numel():
            R, B = len(self.history_relations), batch.x.size(0)
            agg = h1.new_zeros(B * R, self.dim).index_add_(
                0, batch.edge_user * R + batch.edge_relation, h1[batch.edge_item] * batch.edge_norm.unsqueeze(1)
            )
            agg = agg.view(B, R, self.dim)
            for r, rel in enumerate(self.history_relations):
                z = z + self.user_history[_m(rel)](agg[:, r])
        return z

    def scores(self, batch: EncodedUsers, h1: Tensor, vectors: Tensor) -> Tensor:
        """(B, M) scores given the items' layer 1 and output vectors (computed once when serving)."""
        out = self.user_vectors(batch, h1) @ vectors.T + self.item_bias
        if batch.edge_user.numel():
            out = out.index_put(
                (batch.edge_user, batch.edge_item),
                self.repeat[batch.edge_relation] * torch.log1p(batch.edge_count),
                accumulate=True,
            )
        return out

    def forward(self, batch: EncodedUsers) -> Tensor:
        """Scores (B, M) of every item for each user of the batch."""
        h1 = self.item_hidden()
        return self.scores(batch, h1, self.item_vectors(h1))


def _m(name: str) -> str:
    # ModuleDict keys may not contain "."; relation keys hold ":" only, but keep them safe anyway.
    return name.replace(".", "_").replace(":", "__")


def encode_users(users: Sequence[UserInput], model: RecsModel, index: Mapping[Any, int]) -> EncodedUsers:
    """Host tensors for ``model``; history items missing from ``index`` (new since training) are
    left out of the mean. Raises ``ValueError`` on a feature width the model does not expect."""
    rel_index = {r: i for i, r in enumerate(model.history_relations)}
    xs: list[list[float]] = []
    eu: list[int] = []  # per history edge: user (row of the batch), item, relation, normalised and raw weight
    ei: list[int] = []
    er: list[int] = []
    en: list[float] = []
    ec: list[float] = []
    means: dict[str, list[list[float]]] = {s: [] for s in model.user_mean_widths}
    has: dict[str, list[float]] = {s: [] for s in model.user_mean_widths}
    for b, u in enumerate(users):
        if len(u.features) != model.user_width:
            raise ValueError(f"user has {len(u.features)} features, the model expects {model.user_width}")
        xs.append(u.features)
        for s, w in model.user_mean_widths.items():
            m = u.means.get(s)
            if m is not None and len(m) != w:
                raise ValueError(f"{s}: {len(m)} mean features, the model expects {w}")
            means[s].append(m if m is not None else [0.0] * w)
            has[s].append(1.0 if m is not None else 0.0)
        for rel, items in u.history.items():
            r = rel_index.get(rel)
            if r is None:
                raise ValueError(f"the model has no history relation {rel!r}")
            known = [(index[i], float(w)) for i, w in items.items() if i in index and w > 0]
            total = sum(weight for _, weight in known)
            for item, weight in known:
                eu.append(b)
                ei.append(item)
                er.append(r)
                en.append(weight / total)
                ec.append(weight)
    f = lambda v, *shape: torch.tensor(v, dtype=torch.float32).reshape(*shape)
    return EncodedUsers(
        f(xs, len(users), model.user_width),
        {s: f(v, len(users), model.user_mean_widths[s]) for s, v in means.items()},
        {s: f(v, len(users)) for s, v in has.items()},
        torch.tensor(eu, dtype=torch.long),
        torch.tensor(ei, dtype=torch.long),
        torch.tensor(er, dtype=torch.long),
        torch.tensor(en, dtype=torch.float32),
        torch.tensor(ec, dtype=torch.float32),
    )


def top_candidates(scores: Tensor, exclude: Sequence[Sequence[int]], n: int) -> tuple[Tensor, Tensor]:
    """Per row, the ``n`` best items (values, indices) after removing the row's excluded item
    indices; fewer are real when too few items remain (their values are ``-inf``)."""
    scores = scores.clone()
    rows = [b for b, ex in enumerate(exclude) for _ in ex]
    cols = [i for ex in exclude for i in ex]
    if cols:
        scores[torch.tensor(rows, device=scores.device), torch.tensor(cols, device=scores.device)] = float("-inf")
    return torch.topk(scores, min(n, scores.size(1)), dim=1)


@dataclass(frozen=True)
class RiskParams:
    """When a merchant is too risky to recommend. ``min_reported_payers`` and ``report_share`` are
    the report half of the ``colluding_merchant`` rule: past both, the merchant is flagged (risk 1)."""

    max_risk: float = 0.2  # drop at or above this risk; below it, down-rank by log(1 - risk)
    min_reported_payers: int = 3
    report_share: float = 0.2


def merchant_risk(state: Any | None, prior: float, params: RiskParams = RiskParams()) -> float:
    """Fraud risk of a merchant in [0, 1] from its live state (duck-typed ``NodeState``) and the
    fraud model's prior for it: the larger of the prior, the share of its payments confirmed as
    fraud, and 1 once the colluding-merchant report test is met (enough distinct reported payers
    and a high enough share). A merchant with no state yet has only its prior."""
    risk = max(0.0, min(1.0, prior))
    if state is None:
        return risk
    reports, payments = state.fraud_reports, state.amounts.count
    share = min(1.0, reports / payments) if payments else (1.0 if reports else 0.0)
    risk = max(risk, share)
    if len(state.reported.items) >= params.min_reported_payers and share >= params.report_share:
        risk = 1.0
    return risk


@dataclass
class Recommendation:
    item: Any
    score: float  # the decoder's score, before risk
    risk: float
    rank_score: float  # score + log(1 - risk): what the list is ordered by


def rerank(
    candidates: Sequence[tuple[Any, float]], risk_of: Callable[[Any], float], k: int, max_risk: float
) -> tuple[list[Recommendation], int]:
    """The best ``k`` of ``candidates`` ((item, score), any order) after dropping items whose risk
    is at or above ``max_risk`` and down-ranking the rest by ``log(1 - risk)``; also returns how
    many candidates were dropped for risk."""
    kept, dropped = [], 0
    for item, score in candidates:
        if not math.isfinite(score):
            continue
        risk = risk_of(item)
        if risk >= max_risk or risk >= 1.0:
            dropped += 1
            continue
        kept.append(Recommendation(item, score, risk, score + math.log1p(-risk)))
    kept.sort(key=lambda r: -r.rank_score)
    return kept[:k], dropped
