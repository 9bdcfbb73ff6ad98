"""Training the recommender (``models/recommend.py``) on point-in-time interactions.

Each example is (the user's input just before the interaction, the item it then chose). The loss is
the full softmax over all items (cross-entropy of the chosen one): with merchants and products in
the hundreds to tens of thousands, scoring every item per example is one matrix product, and it
optimises exactly what top-K retrieval needs (the chosen item above all others), with no negative
sampling to tune.

The number of epochs is chosen on a later validation window (hit rate at ``k``), never on the test
window; with ``refit`` the model is then trained again from scratch on train + validation for that
many epochs, so the final model has seen everything before the test window (what a production
retrain on the whole log would do).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from fraudgraph.models.recommend import EncodedUsers, RecsModel, UserInput, encode_users

Interaction = tuple[UserInput, Any]  # (user input before it, the item id chosen)


@dataclass(frozen=True)
class RecsConfig:
    dim: int = 32
    epochs: int = 30
    patience: int = 5
    lr: float = 0.01
    weight_decay: float = 1e-6
    batch_size: int = 512
    k: int = 10  # validation hit rate at k
    seed: int = 0


def _batches(
    model: RecsModel, index: Mapping[Any, int], examples: Sequence[Interaction], size: int
) -> list[tuple[EncodedUsers, torch.Tensor]]:
    out = []
    for i in range(0, len(examples), size):
        chunk = [e for e in examples[i : i + size] if e[1] in index]
        if chunk:
            out.append(
                (
                    encode_users([u for u, _ in chunk], model, index),
                    torch.tensor([index[item] for _, item in chunk], dtype=torch.long),
                )
            )
    return out


@torch.no_grad()
def hit_rate(model: RecsModel, batches: Sequence[tuple[EncodedUsers, torch.Tensor]], k: int) -> float:
    """Share of examples whose chosen item is among the model's top ``k`` for that user."""
    model.eval()
    hits = n = 0
    for x, y in batches:
        top = torch.topk(model(x), min(k, model.num_items), dim=1).indices
        hits += int((top == y.unsqueeze(1)).any(1).sum())
        n += len(y)
    return hits / n if n else 0.0


def _fit(model: RecsModel, batches, epochs: int, config: RecsConfig, val=None) -> tuple[int, list[dict]]:
    """Train ``epochs`` epochs; with ``val``, keep the best state by validation hit rate (stopping
    after ``patience`` epochs without a better one) and return its epoch count."""
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss()
    best, best_hr, best_epochs, stale, history = None, -1.0, epochs, 0, []
    for epoch in range(epochs):
        model.train()
        total = count = 0
        for i in torch.randperm(len(batches), generator=gen).tolist():
            x, y = batches[i]
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(y), count + len(y)
        row = {"epoch": epoch + 1, "train_loss": total / max(count, 1)}
        if val is not None:
            row["val_hit_rate"] = hr = hit_rate(model, val, config.k)
            if hr > best_hr:
                best, best_hr, best_epochs, stale = copy.deepcopy(model.state_dict()), hr, epoch + 1, 0
            else:
                stale += 1
        history.append(row)
        if val is not None and stale >= config.patience:
            break
    if best is not None:
        model.load_state_dict(best)
    return best_epochs, history


def train_recs(
    make_model: Callable[[], RecsModel],
    index: Mapping[Any, int],
    train: Sequence[Interaction],
    val: Sequence[Interaction],
    config: RecsConfig = RecsConfig(),
    refit: bool = True,
) -> tuple[RecsModel, dict[str, Any]]:
    """The trained model and a report. ``make_model`` builds a fresh, untrained model (called again
    for the refit)."""
    torch.manual_seed(config.seed)
    model = make_model()
    started = time.perf_counter()
    train_b = _batches(model, index, train, config.batch_size)
    val_b = _batches(model, index, val, config.batch_size)
    if not train_b:
        raise ValueError("no training interaction with a known item")
    epochs, history = _fit(model, train_b, config.epochs, config, val_b or None)
    report = {
        "config": asdict(config),
        "train_examples": sum(len(y) for _, y in train_b),
        "val_examples": sum(len(y) for _, y in val_b),
        "epochs": epochs,
        "history": history,
        f"val_hit_rate_at_{config.k}": hit_rate(model, val_b, config.k) if val_b else None,
    }
    if refit and val_b:
        torch.manual_seed(config.seed)
        model = make_model()
        _fit(model, train_b + val_b, epochs, config)
        report["refit_on_train_and_validation"] = True
    report["train_seconds"] = round(time.perf_counter() - started, 2)
    model.eval()
    return model, report
