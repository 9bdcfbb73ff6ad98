"""Known labels as inputs: scored nodes' labels never reach any score, training nodes' labels
reach their neighbours', and on a graph where fraud clusters they are what the models learn from."""

import numpy as np
import pytest
import torch

from fraudgraph.evaluation.baselines import train_gbt
from fraudgraph.evaluation.label_inputs import known_label_columns, label_input_split, labelled_fraud_shares
from fraudgraph.evaluation.rgcn_trainer import train_rgcn
from fraudgraph.training.scoring_metrics import auc_roc
from fraudgraph.training.splits import stratified_split


def clustered_graph(groups: int = 150, size: int = 4, seed: int = 0):
    """Groups of ``size`` nodes linked all to all (one relation), one label per group, features pure
    noise: only the neighbours' labels say anything about a node."""
    gen = torch.Generator().manual_seed(seed)
    n = groups * size
    group = torch.arange(n) // size
    y = (torch.rand(groups, generator=gen) < 0.3).long()[group]
    a, b = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    same = (group[a] == group[b]) & (a != b)
    edge_index = torch.stack([a[same], b[same]])
    return torch.randn(n, 4, generator=gen), y, edge_index


def test_label_columns_hold_only_the_known_rows():
    y = torch.tensor([1, 0, 1, 1])
    cols = known_label_columns(y, torch.tensor([0, 1]), 4)
    assert cols.tolist() == [[1, 1], [1, 0], [0, 0], [0, 0]]


def test_fraud_share_is_over_labelled_neighbours_only():
    # node 0: 4 neighbours, 2 labelled, 1 of them fraud; node 1: none labelled
    means = torch.tensor([[2 / 4, 1 / 4], [0.0, 0.0]])
    assert labelled_fraud_shares([means, means]).tolist() == [[0.5, 1.0, 0.5, 1.0], [0.0, 0.0, 0.0, 0.0]]


def test_label_input_split_partitions_the_training_nodes():
    train = torch.arange(10, 110)
    inputs, targets = label_input_split(train, 0.65, torch.Generator().manual_seed(0))
    assert inputs.numel() == 65 and targets.numel() == 35
    assert torch.equal(torch.sort(torch.cat([inputs, targets])).values, train)
    with pytest.raises(ValueError):
        label_input_split(train, 1.0, torch.Generator())


@pytest.mark.parametrize("model", ["gbt", "rgcn"])
def test_scores_do_not_depend_on_the_labels_of_scored_nodes(model):
    """Flip every test label: no score may change, since only training labels are ever inputs."""
    x, y, edge_index = clustered_graph()
    split = stratified_split(y, 0.4, 0.2, seed=0)
    flipped = y.clone()
    flipped[split.test] = 1 - flipped[split.test]

    def scores(labels):
        torch.manual_seed(0)
        if model == "gbt":
            return train_gbt(x, {"r": edge_index}, labels, split, seed=0, max_iter=30, known_labels=True).scores
        return train_rgcn(
            x,
            edge_index,
            torch.zeros(edge_index.size(1), dtype=torch.long),
            1,
            labels,
            split,
            seed=0,
            max_epochs=20,
            known_labels=True,
        )[0].scores

    np.testing.assert_array_equal(scores(y), scores(flipped))


@pytest.mark.parametrize("model", ["gbt", "rgcn"])
def test_models_learn_from_neighbours_known_labels(model):
    x, y, edge_index = clustered_graph()
    split = stratified_split(y, 0.4, 0.2, seed=0)
    test = split.test.numpy()

    def test_auc(known_labels):
        if model == "gbt":
            run = train_gbt(x, {"r": edge_index}, y, split, seed=0, known_labels=known_labels)
        else:
            run = train_rgcn(
                x,
                edge_index,
                torch.zeros(edge_index.size(1), dtype=torch.long),
                1,
                y,
                split,
                seed=0,
                lr=0.03,
                max_epochs=200,
                known_labels=known_labels,
            )[0]
        return auc_roc(y.numpy()[test], run.scores[test])

    with_labels, without = test_auc(known_labels=True), test_auc(known_labels=False)
    # A test node has 3 group mates, each a training node with probability 0.4. Without labels the
    # models still reach ~0.7 by recognising a group from its members' (noise) features.
    assert with_labels > 0.95, (with_labels, without)
    assert with_labels > without + 0.15, (with_labels, without)
