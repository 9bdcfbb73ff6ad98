"""The two baselines every graph model is measured against, generic over any node-classification
dataset given as (features, directed edge_index per relation, split, binary labels):

* ``train_mlp``: an MLP on the node's own features only. If a graph model cannot beat it, the
  graph adds nothing the features did not already say.
* ``train_gbt``: scikit-learn's ``HistGradientBoostingClassifier`` on own features plus
  per-relation neighbour aggregates (``neighbour_aggregates``): the graph, used without message
  passing. GADBench found this beats most GNNs on fraud graphs; it is the bar.

Both select on the validation split only (early stopping on validation AUC for the MLP,
validation loss for the trees) and return scores for *every* node, so the caller computes the test
metrics in one place for all models.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from fraudgraph.evaluation.label_inputs import known_label_columns
from fraudgraph.evaluation.neighbour_aggregates import neighbour_aggregates
from fraudgraph.training.early_stopping import EarlyStopping
from fraudgraph.training.scoring_metrics import auc_roc
from fraudgraph.training.splits import Split


@dataclass
class ModelRun:
    """One trained model's scores (probability-like, higher = more likely fraud) for all nodes."""

    name: str
    scores: np.ndarray
    train_seconds: float
    info: dict = field(default_factory=dict)


def positive_weight(y: Tensor) -> Tensor:
    """negatives / positives among ``y``: weights the loss so both classes count equally."""
    pos = y.float().sum()
    return (y.numel() - pos) / pos.clamp(min=1)


class MLP(nn.Module):
    def __init__(self, in_channels: int, hidden: int = 64, layers: int = 2, dropout: float = 0.2):
        super().__init__()
        mods: list[nn.Module] = []
        width = in_channels
        for _ in range(layers):
            mods += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        mods.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(-1)


def train_mlp(
    x: Tensor,
    y: Tensor,
    split: Split,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    dropout: float = 0.2,
    lr: float = 3e-3,
    weight_decay: float = 1e-5,
    batch_size: int = 1024,
    max_epochs: int = 300,
    patience: int = 30,
) -> ModelRun:
    """Mini-batch Adam with class-weighted BCE; weights of the best validation AUC."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = MLP(x.size(1), hidden, layers, dropout)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=positive_weight(y[split.train]))
    stopper = EarlyStopping(patience)
    yf = y.float()
    val_y = y[split.val].numpy()
    start = time.perf_counter()
    epoch = 0
    for epoch in range(max_epochs):
        model.train()
        for batch in split.train[torch.randperm(split.train.numel(), generator=gen)].split(batch_size):
            opt.zero_grad()
            loss_fn(model(x[batch]), yf[batch]).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            val_auc = auc_roc(val_y, model(x[split.val]).numpy())
        if stopper.update(model, val_auc, epoch):
            break
    stopper.restore(model).eval()
    with torch.no_grad():
        scores = torch.sigmoid(model(x)).numpy()
    return ModelRun(
        "mlp",
        scores,
        time.perf_counter() - start,
        {
            "hidden": hidden,
            "layers": layers,
            "dropout": dropout,
            "lr": lr,
            "epochs_run": epoch + 1,
            "best_epoch": stopper.best_epoch,
            "val_auc_roc": round(stopper.best_score, 4),
        },
    )


def train_gbt(
    x: Tensor,
    edge_indices: Mapping[str, Tensor],
    y: Tensor,
    split: Split,
    seed: int = 0,
    feature_names: list[str] | None = None,
    max_iter: int = 1000,
    learning_rate: float = 0.05,
    max_leaf_nodes: int = 63,
    known_labels: bool = False,
) -> ModelRun:
    """Gradient-boosted trees on [own features | neighbour mean, max, log degree per relation].

    ``known_labels=True`` adds the same aggregates of the training nodes' label columns
    (``label_inputs.py``): per relation, the share of neighbours known to be fraud and whether any
    is. Neighbours only (1 hop, no self-relation), so every training label can be an input.

    Early stopping on our validation split (not a random slice of train), so the trees and the
    neural models are selected on the same nodes. Building the aggregates counts as training time:
    it is the trees' substitute for message passing.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    start = time.perf_counter()
    agg, agg_names = neighbour_aggregates(x, edge_indices, feature_names)
    blocks = [x, agg]
    if known_labels:
        label_agg, label_names = neighbour_aggregates(
            known_label_columns(y, split.train, x.size(0)).to(x.dtype), edge_indices, ["known", "known_fraud"]
        )
        blocks.append(label_agg)
        agg_names = agg_names + label_names
    features = torch.cat(blocks, dim=1).numpy()
    labels = y.numpy()
    tr, va = split.train.numpy(), split.val.numpy()
    clf = HistGradientBoostingClassifier(
        learning_rate=learning_rate,
        max_iter=max_iter,
        max_leaf_nodes=max_leaf_nodes,
        early_stopping=True,
        n_iter_no_change=30,
        random_state=seed,
    )
    clf.fit(features[tr], labels[tr], X_val=features[va], y_val=labels[va])
    scores = clf.predict_proba(features)[:, 1]
    seconds = time.perf_counter() - start
    val_auc = auc_roc(labels[va], scores[va])
    return ModelRun(
        "gbt",
        scores,
        seconds,
        {
            "features": features.shape[1],
            "aggregate_columns": len(agg_names),
            "iterations": int(clf.n_iter_),
            "learning_rate": learning_rate,
            "max_leaf_nodes": max_leaf_nodes,
            "known_labels": known_labels,
            "val_auc_roc": round(val_auc, 4),
        },
    )
