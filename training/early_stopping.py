"""Model selection on the validation split: keep the weights of the best validation AUC-ROC, stop
after ``patience`` evaluations without improvement.

Why AUC and not validation loss: with class-weighted loss the loss scale says little about the
ranking the evaluation scores, and AUC is what is reported. The test split is never looked at here.
"""

from __future__ import annotations

import copy

from torch import nn


class EarlyStopping:
    def __init__(self, patience: int = 20, min_delta: float = 1e-4):
        self.patience, self.min_delta = patience, min_delta
        self.best_score = float("-inf")
        self.best_epoch = -1
        self.best_state: dict | None = None
        self._since_best = 0

    def update(self, model: nn.Module, score: float, epoch: int) -> bool:
        """Record ``score`` for ``epoch``; True when training should stop."""
        if score > self.best_score + self.min_delta:
            self.best_score, self.best_epoch, self._since_best = score, epoch, 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self._since_best += 1
        return self._since_best >= self.patience

    def restore(self, model: nn.Module) -> nn.Module:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        return model
