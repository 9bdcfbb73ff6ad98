"""Seeded stratified node splits, so every model in one evaluation sees the same nodes.

Stratified per class (each class shuffled with the seed and cut at the same fractions), so a 14.5%
positive rate is 14.5% in train, validation and test alike and small validation sets still have
enough positives for a stable AUC. numpy's ``default_rng`` rather than torch's generator: the split
must not depend on how many torch random numbers a model drew before it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Split:
    train: Tensor
    val: Tensor
    test: Tensor


def stratified_split(y: Tensor, train: float = 0.4, val: float = 0.2, seed: int = 0) -> Split:
    """Disjoint sorted index tensors; test is the rest (1 - train - val)."""
    if not (0 < train and 0 <= val and train + val < 1):
        raise ValueError("need 0 < train, 0 <= val, train + val < 1")
    rng = np.random.default_rng(seed)
    labels = y.cpu().numpy()
    parts: list[list[np.ndarray]] = [[], [], []]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        a, b = round(train * idx.size), round((train + val) * idx.size)
        for part, chunk in zip(parts, (idx[:a], idx[a:b], idx[b:])):
            part.append(chunk)
    return Split(*(torch.from_numpy(np.sort(np.concatenate(p))).long() for p in parts))
