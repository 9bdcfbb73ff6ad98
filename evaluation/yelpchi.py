"""YelpChi fraud (spam review) detection: R-GCN against an MLP, gradient-boosted trees and the
heterophily-aware BWGNN (``bwgnn.py``), all on the same features, the same seeded stratified split
(40% train / 20% val / 40% test) and measured in the same run, twice:

* on label-free features only (rating, date, user and product activity);
* with the training nodes' labels as inputs too (``label_inputs.py``), as a deployed system knows
  the confirmed fraud around what it scores. The MLP sees no neighbours, so it has no second row;
  BWGNN, as published, has none either.

The neural models read the features piecewise-linearly encoded (``numeric_encoding.py``), the
trees raw (a tree's splits are the thresholds the encoding provides).

    fraudgraph evaluate yelpchi [--seed 0] [--out benchmarks/results/evaluate_yelpchi.json]
    python -m fraudgraph.evaluation.yelpchi [--seed 0] [--out PATH] [--threads 2]

Every model picks its epoch / number of trees on the validation split; the test split is scored
once at the end. Reported per model: test AUC-ROC, AUC-PR (average precision; chance = 0.145),
recall at 1% FPR, and training seconds (for the trees including building the neighbour
aggregates, for the R-GCN including building its sparse operators). Published AUCs (README of the
dataset) use 32 text-derived features we do not have, so they are context, not a target.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fraudgraph.evaluation.baselines import ModelRun, train_gbt, train_mlp
from fraudgraph.evaluation.bwgnn import train_bwgnn
from fraudgraph.evaluation.numeric_encoding import fit_bin_edges, piecewise_linear
from fraudgraph.evaluation.rgcn_trainer import train_rgcn
from fraudgraph.evaluation.yelpchi_data import load_yelpchi
from fraudgraph.machine import machine
from fraudgraph.training.scoring_metrics import auc_pr, auc_roc, recall_at_fpr
from fraudgraph.training.splits import stratified_split

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "evaluate_yelpchi.json"
#: chosen on the validation split of seed 0 (see the report's "rgcn" info for the selected epoch).
#: Validation AUC-ROC of the steps from the plain R-GCN (0.819): + LayerNorm after layer 1 0.821,
#: + weight decay 5e-5 -> 5e-4 0.825, + no class weight in the loss 0.826, + piecewise-linear
#: inputs (``PLE_BINS``) with lr 0.03 -> 0.003 and up to 800 epochs 0.832. Tried and not kept (no
#: validation gain): log degree per relation as extra input columns (the features already hold
#: user and product review counts), hidden 128, jumping-knowledge head, only rur / rur+rtr,
#: 16 bins, raw columns beside the encoded ones, dropout 0.3.
RGCN_CONFIG: dict[str, Any] = {
    "hidden": 64,
    "num_bases": None,
    "dropout": 0.1,
    "lr": 0.003,
    "weight_decay": 5e-4,
    "layer_norm": True,
    "class_weight": False,
    "max_epochs": 800,
    "patience": 60,
}
#: quantile bins of the neural models' piecewise-linear input encoding (``numeric_encoding.py``)
PLE_BINS = 8
#: share of training nodes whose labels are inputs in an epoch when labels are known (the rest are
#: loss targets): validation AUC 0.855 / 0.857 / 0.856 for 0.5 / 0.65 / 0.8 (seed 0)
LABEL_INPUT_FRACTION = 0.65


def split_metrics(y: np.ndarray, run: ModelRun, idx: np.ndarray) -> dict:
    """The threshold-free figures every fraud evaluation reports: the AUCs and the two operating
    points a fraud team asks about, recall at 0.1% and at 1% FPR (an AUC can hide a model that
    catches nothing at the false-positive rates a bank can afford)."""
    s = run.scores[idx]
    return {
        "auc_roc": round(auc_roc(y[idx], s), 4),
        "auc_pr": round(auc_pr(y[idx], s), 4),
        "recall_at_0.1pct_fpr": round(recall_at_fpr(y[idx], s, 0.001), 4),
        "recall_at_1pct_fpr": round(recall_at_fpr(y[idx], s, 0.01), 4),
        "train_seconds": round(run.train_seconds, 1),
    }


def format_table(results: dict) -> str:
    lines = [f"{'model':11s} {'AUC-ROC':>8s} {'AUC-PR':>8s} {'R@0.1%FPR':>9s} {'R@1%FPR':>8s} {'train s':>8s}"]
    for name, m in results.items():
        lines.append(
            f"{name:11s} {m['auc_roc']:8.4f} {m['auc_pr']:8.4f} {m['recall_at_0.1pct_fpr']:9.4f} "
            f"{m['recall_at_1pct_fpr']:8.4f} {m['train_seconds']:8.1f}"
        )
    return "\n".join(lines)


def evaluate(seed: int = 0, out: str | None = None, source: str | None = None, command: str | None = None) -> dict:
    t0 = time.perf_counter()
    graph = load_yelpchi(source)
    load_s = time.perf_counter() - t0
    split = stratified_split(graph.y, 0.4, 0.2, seed)
    edge_index, edge_type = graph.typed_edges()
    encoded = piecewise_linear(graph.x, fit_bin_edges(graph.x[split.train], PLE_BINS))
    edges = graph.edge_indices()
    runs = [
        train_mlp(encoded, graph.y, split, seed),
        train_gbt(graph.x, edges, graph.y, split, seed, feature_names=graph.feature_names),
        train_rgcn(encoded, edge_index, edge_type, len(graph.pairs), graph.y, split, seed, **RGCN_CONFIG)[0],
        train_bwgnn(encoded, edges, graph.y, split, seed),
    ]
    labelled = [
        train_gbt(graph.x, edges, graph.y, split, seed, feature_names=graph.feature_names, known_labels=True),
        train_rgcn(
            encoded,
            edge_index,
            edge_type,
            len(graph.pairs),
            graph.y,
            split,
            seed,
            known_labels=True,
            label_input_fraction=LABEL_INPUT_FRACTION,
            **RGCN_CONFIG,
        )[0],
    ]
    y, test = graph.y.numpy(), split.test.numpy()
    results = {r.name: split_metrics(y, r, test) for r in runs}
    results_labelled = {r.name: split_metrics(y, r, test) for r in labelled}
    print("label-free features:\n" + format_table(results), flush=True)
    print("with the training nodes' labels as neighbour inputs:\n" + format_table(results_labelled), flush=True)
    report = {
        "benchmark": "yelpchi",
        "command": command or "python -m fraudgraph.evaluation.yelpchi " + " ".join(sys.argv[1:]),
        "machine": machine("cpu"),
        "graph": {
            "reviews": graph.num_nodes,
            "fraudulent": int(graph.y.sum()),
            "pairs": {n: int(p.size(1)) for n, p in graph.pairs.items()},
            "features": graph.feature_names,
        },
        "split": {
            "seed": seed,
            "train": int(split.train.numel()),
            "val": int(split.val.numpy().size),
            "test": int(test.size),
            "stratified": True,
        },
        "input_encoding": {
            "neural": f"piecewise-linear, {PLE_BINS} quantile bins fitted on the training nodes",
            "gbt": "raw",
        },
        "results_test": results,
        "results_test_with_known_labels": results_labelled,
        "model_info": {r.name: r.info for r in runs},
        "model_info_with_known_labels": {r.name: r.info for r in labelled},
        "published_auc_roc_with_text_features": {
            "GCN": 0.565,
            "GraphSAGE": 0.783,
            "CARE-GNN": 0.757,
            "PC-GNN": 0.799,
            "BWGNN": 0.905,
            "GHRN": 0.896,
        },
        "load_seconds": round(load_s, 2),
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }
    path = Path(out) if out else DEFAULT_OUT
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return report


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument(
        "--data-dir", default=None, help="folder with YelpChi_metadata.gz (default ../shared/datasets/yelpchi)"
    )
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return evaluate(args.seed, args.out, args.data_dir)


if __name__ == "__main__":
    main()
