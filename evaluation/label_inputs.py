"""Known labels as model inputs: what a node's neighbours are already known to be.

Why: fraud is rarely alone. A payment from an account with a confirmed chargeback, or a review by a
user whose other reviews were filtered, is far likelier to be fraud, and a deployed system knows
those labels when it scores (the worker keeps ``NodeState.fraud_reports`` per node). On YelpChi the
share of known-fraudulent reviews among a review's same-user neighbours alone ranks validation
reviews that have such neighbours at 0.98 AUC. Leaving known labels out would measure every model
on a problem nobody deploying it has.

Each node gets two input columns, ``known`` (its label is an input) and ``known_fraud`` (it is and
the label is fraud); nodes whose label is not an input get zeros. Neighbour means of those columns
give the share of a node's neighbours that are known and known fraud; what predicts is their ratio,
the fraud share among the *labelled* neighbours, which a layer that adds weighted means cannot
form. ``labelled_fraud_shares`` computes it per relation for the R-GCN (validation AUC 0.857 ->
0.862 on YelpChi); the trees, which split on the two means jointly, ranked worse with it (0.860 ->
0.848) and go without. A node's own label must never reach its own score:

* the trees aggregate the columns over 1-hop neighbours only, and no relation links a node to
  itself, so the training nodes' labels can all be inputs;
* an R-GCN's second layer reaches 2 hops, and ``v -> u -> v`` brings ``v``'s label back. So every
  epoch splits the training nodes afresh into label *inputs* and loss *targets*
  (``label_input_split``; the "label trick" of Wang & Leskovec 2020 and UniMP, Shi et al. 2021),
  and a target's label appears nowhere in that epoch's input. When scoring, all training labels are
  inputs and no scored (validation, test) label is.
"""

from __future__ import annotations

import torch
from torch import Tensor


def known_label_columns(y: Tensor, known: Tensor, num_nodes: int) -> Tensor:
    """(num_nodes, 2) float columns ``[known, known_fraud]`` with only the ``known`` rows set."""
    cols = torch.zeros(num_nodes, 2)
    cols[known, 0] = 1.0
    cols[known, 1] = y[known].float()
    return cols


def label_input_split(train: Tensor, input_fraction: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A random (inputs, targets) partition of ``train``, ``input_fraction`` of it inputs."""
    if not 0 < input_fraction < 1:
        raise ValueError("input_fraction must be in (0, 1)")
    perm = train[torch.randperm(train.numel(), generator=generator)]
    k = round(input_fraction * train.numel())
    return perm[:k], perm[k:]


def labelled_fraud_shares(label_means: list[Tensor]) -> Tensor:
    """Per relation ``[fraud share among labelled neighbours, has a labelled neighbour]``.

    ``label_means[r]`` is the (N, 2) neighbour mean of ``known_label_columns`` under relation r;
    the ratio of its columns is the ratio of the counts. No labelled neighbour gives ``[0, 0]``.
    """
    cols = []
    for means in label_means:
        known, fraud = means[:, 0], means[:, 1]
        has = known > 0
        cols += [
            torch.where(has, fraud / known.clamp(min=torch.finfo(known.dtype).tiny), torch.zeros_like(known)),
            has.to(known.dtype),
        ]
    return torch.stack(cols, dim=1)
