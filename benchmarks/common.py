"""What every benchmark report shares: the machine it ran on, and percentiles."""

from __future__ import annotations

from pathlib import Path

from fraudgraph.machine import machine
from fraudgraph.streams.topics import delete_topics, topics_of_run

__all__ = ["delete_run_topics", "machine", "pct", "register_untrained_model"]


def delete_run_topics(s) -> None:
    """Delete the topics of one benchmark run (its CDC prefix, scores topic and changelogs):
    left behind, they slow every later broker restart."""
    delete_topics(s, topics_of_run(s, s.topic_prefix + ".", s.scores_topic, s.worker_id + "-"))


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of ``values``, nearest rank."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def register_untrained_model(registry: Path | str) -> str:
    """An untrained R-GCN of the shipped architecture (the training defaults), registered as current
    in ``registry``; returns its version. Inference cost does not depend on the weights, so the
    benchmarks of serving use it rather than train a model first. (Imports here: most benchmarks
    never load torch.)"""
    import torch

    from fraudgraph.models import features as fx
    from fraudgraph.models.hetero import FRAUD_RELATIONS
    from fraudgraph.models.registry import ModelRegistry, card_for
    from fraudgraph.models.rgcn import HeteroRGCN
    from fraudgraph.training.train import TrainConfig

    torch.manual_seed(0)
    config = TrainConfig()
    model = HeteroRGCN(
        dict(fx.FEATURE_WIDTHS), FRAUD_RELATIONS, config.hidden, out_channels=1, num_bases=config.num_bases
    ).eval()
    return ModelRegistry(registry).register(model, card_for(model, threshold=0.5, target_fpr=0.01)).version
