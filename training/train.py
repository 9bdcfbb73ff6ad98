"""Training the fraud R-GCN on point-in-time examples, with a time split and an operating point.

The examples (``training/replay.py``) are already in event-time order. The split is by time, never
at random: train on the earliest transactions, pick the epoch and the threshold on the next
window, and report on the last one, which is what the model will face in production (the future).
A random split would let a fraud ring's later transactions teach the model about its earlier ones.

The forward pass is ``HeteroRGCN.score_batch``, the very function that serves the model, over the
encoded requests: what is trained is what is served.

The threshold is the lowest probability whose false-positive rate on the validation window is at
most ``target_fpr`` or, with ``target_alert_rate``, that flags at most that share of all the
window's transactions (what a review team sizes); the test report shows the recall, the FPR and the
alert rate that threshold really gives on the later window, next to the threshold-free AUCs and the
recall at 0.1% and 1% FPR.

Unlabelled transactions (``known`` False: a CSV log's ``unknown_values``) stay in the replay, so
they shape their neighbours' features, and in the windows' time cuts; they are left out of the loss
and of every labelled metric, and counted in the alert rate, since an alert falls on them too.

The card records the event fields the training data provided that reach a model's inputs
(``training_fields``, as ``trained_on["fields"]``): a worker whose mapping lacks one of them refuses
the model rather than score it on the "missing" encoding (``models/registry.py``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fraudgraph.connectors.csv_log_mapping import CsvLogMapping, load_csv_log_mapping
from fraudgraph.connectors.mapping import load_mapping
from fraudgraph.models.batch import EncodedBatch, ScoringRequest, encode
from fraudgraph.models.features import FEATURE_WIDTHS
from fraudgraph.models.hetero import FRAUD_RELATIONS
from fraudgraph.models.rgcn import HeteroRGCN
from fraudgraph.settings import Settings
from fraudgraph.streams.state import MODEL_INPUTS
from fraudgraph.training.scoring_metrics import (
    auc_pr,
    auc_roc,
    recall_at_fpr,
    threshold_for_alert_rate,
    threshold_for_fpr,
)

OPERATING_FPRS = (0.001, 0.01)  # every report gives the recall at these false-positive rates


def trained_fields(present: Iterable[str]) -> list[str]:
    """What a card lists as the fields its model was trained with: of the event fields the training
    data provided (``Event.field``), those that reach a model's inputs (``streams.state.MODEL_INPUTS``;
    a worker without e.g. a customer's name scores exactly as with it, so it refuses no model)."""
    return sorted(set(present) & MODEL_INPUTS)


def csv_log_fields(mapping: CsvLogMapping) -> set[str]:
    """The event fields ``connectors.csv_log`` fills from a log under ``mapping``: the transaction's
    (currency, status and kind by default if the log lacks them), its payee of the kind the mapping
    allows, device and IP if mapped, and the fraud reports if the log is labelled."""
    fields = {"transaction_id", "account_id", "kind", "amount", "currency", "status", "created_at", "updated_at"}
    if mapping.target_is in ("merchant", "column"):
        fields.add("merchant_id")
    if mapping.target_is in ("account", "column"):
        fields.add("counterparty_account_id")
    fields |= {name for name, column in (("device_id", mapping.columns.device), ("ip", mapping.columns.ip)) if column}
    out = {f"TransactionRow.{name}" for name in fields}
    if mapping.columns.label is not None:
        out |= {f"FraudReported.{name}" for name in ("report_id", "transaction_id", "kind", "reported_at")}
    return out


def training_fields(settings: Settings, csv_mapping: str | Path | None = None) -> list[str]:
    """``trained_on["fields"]`` for ``fraudgraph train``: from the CSV log's mapping (``--source csv``),
    else from the CDC mapping the records are decoded with (``settings.mapping_file``)."""
    if csv_mapping is not None:
        return trained_fields(csv_log_fields(load_csv_log_mapping(csv_mapping)))
    return trained_fields(load_mapping(settings.mapping_file or None).present_fields())


@dataclass(frozen=True)
class TrainConfig:
    hidden: int = 32
    num_bases: int | None = 4
    epochs: int = 40
    patience: int = 8  # epochs without a better validation AUC-PR before stopping
    lr: float = 0.01
    weight_decay: float = 1e-4
    batch_size: int = 1024
    train_frac: float = 0.6
    val_frac: float = 0.2  # the rest is the test window
    target_fpr: float = 0.01
    # When set, the threshold flags at most this share of the validation window's transactions
    # (labelled or not) instead of meeting target_fpr.
    target_alert_rate: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.target_alert_rate is not None and not 0.0 <= self.target_alert_rate <= 1.0:
            raise ValueError(f"target_alert_rate must be in [0, 1], got {self.target_alert_rate!r}")


@dataclass
class Split:
    batches: list[EncodedBatch]
    labels: list[torch.Tensor]
    first_ts_ms: int
    last_ts_ms: int
    known: np.ndarray  # per example: its label is known (unknown ones are scored, never measured)

    @property
    def y(self) -> np.ndarray:
        return torch.cat(self.labels).numpy() if self.labels else np.zeros(0)


def _split(
    model: HeteroRGCN,
    requests: Sequence[ScoringRequest],
    labels: Sequence[int],
    ts: Sequence[int],
    known: Sequence[bool],
    batch_size: int,
) -> Split:
    batches, ys = [], []
    for i in range(0, len(requests), batch_size):
        batches.append(encode(requests[i : i + batch_size], model).to("cpu", torch.float32))
        ys.append(torch.tensor(labels[i : i + batch_size], dtype=torch.float32))
    return Split(batches, ys, ts[0] if ts else 0, ts[-1] if ts else 0, np.asarray(known, dtype=bool))


@torch.no_grad()
def predict(model: HeteroRGCN, split: Split) -> np.ndarray:
    model.eval()
    return (
        np.concatenate([torch.sigmoid(model.score_batch(b)[0][:, 0]).numpy() for b in split.batches])
        if split.batches
        else np.zeros(0)
    )


def evaluate(
    y: np.ndarray, p: np.ndarray, threshold: float, target_fpr: float, known: np.ndarray | None = None
) -> dict[str, float | None]:
    """Threshold-free and at-threshold figures over the known labels (``known``; default all); the
    ranking ones are None for a window without both classes (a short log's last window may hold no
    reported fraud). The alert rate is over every transaction of the window, labelled or not."""
    all_flagged = p >= threshold
    known = np.ones(len(y), dtype=bool) if known is None else np.asarray(known, dtype=bool)
    y, p, flagged = y[known], p[known], all_flagged[known]
    pos, neg = int(y.sum()), int((1 - y).sum())
    ranked = pos > 0 and neg > 0
    out: dict[str, float | None] = {
        "n": int(len(y)),
        "unlabelled": int((~known).sum()),
        "positives": pos,
        "auc_roc": auc_roc(y, p) if ranked else None,
        "auc_pr": auc_pr(y, p) if ranked else None,
    }
    for fpr in sorted({*OPERATING_FPRS, target_fpr}):
        out[f"recall_at_{fpr:g}_fpr"] = recall_at_fpr(y, p, fpr) if ranked else None
    out["recall_at_threshold"] = float((flagged & (y == 1)).sum() / pos) if pos else None
    out["fpr_at_threshold"] = float((flagged & (y == 0)).sum() / neg) if neg else None
    out["alert_rate_at_threshold"] = float(all_flagged.mean()) if len(all_flagged) else None
    return out


def pick_threshold(config: TrainConfig, y: np.ndarray, p: np.ndarray, known: np.ndarray) -> float:
    """The decision threshold on the validation window: for ``target_alert_rate`` over all its
    scores, else for ``target_fpr`` over its labelled ones."""
    if config.target_alert_rate is not None:
        return threshold_for_alert_rate(p, config.target_alert_rate)
    return threshold_for_fpr(y[known], p[known], config.target_fpr)


def train(
    requests: Sequence[ScoringRequest],
    labels: Sequence[int],
    ts_ms: Sequence[int],
    config: TrainConfig = TrainConfig(),
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    known: Sequence[bool] | None = None,
) -> tuple[HeteroRGCN, dict[str, Any]]:
    """Returns the best model (by validation AUC-PR) and a report: sizes, windows, metrics.
    ``on_epoch`` is told each epoch's figures (the CLI's progress bar). ``known`` (default: all)
    marks the examples whose label is known; the others are cut into windows by time like the
    rest but never trained on nor measured."""
    known = [True] * len(requests) if known is None else list(known)
    if not len(requests) == len(labels) == len(ts_ms) == len(known):
        raise ValueError("requests, labels, timestamps and the known mask must align")
    torch.manual_seed(config.seed)
    model = HeteroRGCN(FEATURE_WIDTHS, FRAUD_RELATIONS, config.hidden, out_channels=1, num_bases=config.num_bases)
    n = len(requests)
    a, b = int(n * config.train_frac), int(n * (config.train_frac + config.val_frac))
    started = time.perf_counter()
    train_rows = [i for i in range(a) if known[i]]  # the loss sees labelled examples only
    train_s = _split(
        model,
        [requests[i] for i in train_rows],
        [labels[i] for i in train_rows],
        ts_ms[:a],
        [True] * len(train_rows),
        config.batch_size,
    )
    val_s, test_s = (
        _split(model, requests[i:j], labels[i:j], ts_ms[i:j], known[i:j], config.batch_size)
        for i, j in ((a, b), (b, n))
    )
    encode_s = time.perf_counter() - started
    y_train = train_s.y
    if y_train.sum() == 0 or val_s.y[val_s.known].sum() == 0:
        raise ValueError("the training and validation windows both need reported fraud")
    pos_weight = torch.tensor((len(y_train) - y_train.sum()) / y_train.sum())
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)

    best, best_ap, stale, history = copy.deepcopy(model.state_dict()), -1.0, 0, []
    started = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        total = 0.0
        for i in torch.randperm(len(train_s.batches), generator=gen).tolist():
            opt.zero_grad()
            logits, _ = model.score_batch(train_s.batches[i])
            loss = loss_fn(logits[:, 0], train_s.labels[i])
            loss.backward()
            opt.step()
            total += loss.item() * len(train_s.labels[i])
        val_ap = auc_pr(val_s.y[val_s.known], predict(model, val_s)[val_s.known])
        history.append({"epoch": epoch, "train_loss": total / len(y_train), "val_auc_pr": val_ap})
        if on_epoch is not None:
            on_epoch(history[-1])
        if val_ap > best_ap:
            best, best_ap, stale = copy.deepcopy(model.state_dict()), val_ap, 0
        else:
            stale += 1
            if stale >= config.patience:
                break
    train_seconds = time.perf_counter() - started
    model.load_state_dict(best)
    model.eval()

    p_val = predict(model, val_s)
    threshold = pick_threshold(config, val_s.y, p_val, val_s.known)
    if not math.isfinite(threshold):
        threshold = 1.0
    report = {
        "config": asdict(config),
        "examples": n,
        "unlabelled": n - sum(known),
        "threshold_for": (
            {"alert_rate": config.target_alert_rate}
            if config.target_alert_rate is not None
            else {"fpr": config.target_fpr}
        ),
        "encode_seconds": round(encode_s, 2),
        "train_seconds": round(train_seconds, 2),
        "epochs_run": len(history),
        "history": history,
        "threshold": threshold,
        "windows": {
            name: {"first_ts_ms": s.first_ts_ms, "last_ts_ms": s.last_ts_ms}
            for name, s in (("train", train_s), ("validation", val_s), ("test", test_s))
        },
        "validation": evaluate(val_s.y, p_val, threshold, config.target_fpr, val_s.known),
        "test": evaluate(test_s.y, predict(model, test_s), threshold, config.target_fpr, test_s.known),
    }
    return model, report
