"""Baselines the recommender is measured against, in the same run on the same split.

* ``popularity``: every user gets the items chosen most often in the training window. Any model
  that does not beat it has learned nothing personal.
* ``MatrixFactorisation``: a learned vector per user and per item and an item bias, the score their
  dot product plus the bias, trained with the same full-softmax loss, optimiser, epoch selection and
  refit as the R-GCN (``recs_train.py``). It is transductive: a user without a training interaction
  has no vector and gets the popularity ranking, which is what such a system would serve.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fraudgraph.training.recs_train import RecsConfig


def popularity(items: Sequence[Any], index: Mapping[Any, int], num_items: int) -> np.ndarray:
    """Training-window choice counts per item index (items outside ``index`` are ignored)."""
    out = np.zeros(num_items)
    for item in items:
        if item in index:
            out[index[item]] += 1
    return out


class MatrixFactorisation(nn.Module):
    def __init__(self, num_users: int, num_items: int, dim: int):
        super().__init__()
        self.users, self.items = nn.Embedding(num_users, dim), nn.Embedding(num_items, dim)
        nn.init.normal_(self.users.weight, std=0.1)
        nn.init.normal_(self.items.weight, std=0.1)
        self.bias = nn.Parameter(torch.zeros(num_items))

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        return self.users(users) @ self.items.weight.T + self.bias


def _tensors(pairs: Sequence[tuple[Any, Any]], users: Mapping[Any, int], items: Mapping[Any, int]):
    kept = [(users[u], items[i]) for u, i in pairs if u in users and i in items]
    if not kept:
        return None
    u, i = zip(*kept)
    return torch.tensor(u, dtype=torch.long), torch.tensor(i, dtype=torch.long)


@torch.no_grad()
def _hit_rate(model: MatrixFactorisation, data, k: int) -> float:
    if data is None:
        return 0.0
    model.eval()
    u, i = data
    top = torch.topk(model(u), min(k, model.bias.numel()), dim=1).indices
    return float((top == i.unsqueeze(1)).any(1).float().mean())


def _fit(model, data, epochs, config: RecsConfig, val=None) -> int:
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    u, i = data
    best, best_hr, best_epochs, stale = None, -1.0, epochs, 0
    for epoch in range(epochs):
        model.train()
        for chunk in torch.randperm(len(u), generator=gen).split(config.batch_size):
            opt.zero_grad()
            loss_fn(model(u[chunk]), i[chunk]).backward()
            opt.step()
        if val is not None:
            hr = _hit_rate(model, val, config.k)
            if hr > best_hr:
                best, best_hr, best_epochs, stale = copy.deepcopy(model.state_dict()), hr, epoch + 1, 0
            else:
                stale += 1
                if stale >= config.patience:
                    break
    if best is not None:
        model.load_state_dict(best)
    return best_epochs


def train_mf(
    train: Sequence[tuple[Any, Any]],
    val: Sequence[tuple[Any, Any]],
    items: Mapping[Any, int],
    config: RecsConfig = RecsConfig(),
) -> tuple[MatrixFactorisation, dict[Any, int], dict[str, Any]]:
    """(user, item) pairs -> the model, its user index (users of train + validation) and a report.
    Epochs are chosen on ``val`` with a model of the training users only, then the model is refit
    on train + validation from scratch."""
    torch.manual_seed(config.seed)
    train_users = {u: n for n, u in enumerate(dict.fromkeys(u for u, _ in train))}
    model = MatrixFactorisation(len(train_users), len(items), config.dim)
    data = _tensors(train, train_users, items)
    if data is None:
        raise ValueError("no training pair with a known item")
    epochs = _fit(model, data, config.epochs, config, _tensors(val, train_users, items))
    all_users = {u: n for n, u in enumerate(dict.fromkeys(u for u, _ in [*train, *val]))}
    torch.manual_seed(config.seed)
    model = MatrixFactorisation(len(all_users), len(items), config.dim)
    _fit(model, _tensors([*train, *val], all_users, items), epochs, config)
    model.eval()
    return model, all_users, {"epochs": epochs, "users": len(all_users)}
