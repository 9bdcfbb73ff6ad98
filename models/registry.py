"""Versioned model checkpoints on disk, and which one is current.

Layout under the registry root::

    <version>/model.pt    the model's state_dict
    <version>/card.json   ModelCard: architecture, feature spec, threshold, metrics, training data
    CURRENT               the version the workers serve (one line)

Why a directory and a pointer file: a version directory is written completely under a temporary
name and renamed into place, and CURRENT is replaced by an atomic rename too, so a worker polling
the registry never reads half a checkpoint, and promoting or rolling back a model is rewriting one
line. Every score records ``ModelCard.version``, so a decision can always be traced to its weights.

Why the feature spec is in the card: a checkpoint is only meaningful with the encoding it was
trained on; loading one whose spec differs from the running code's ``FEATURE_SPEC`` is refused.

Why the fields are in the card too: the spec encodes a field the bank's mapping leaves out as
"missing" (``models/features.py``), so a model trained where a field was present would score every
transaction of a worker without it on inputs it never learned from. ``trained_on["fields"]`` lists
the event fields (``Event.field``) its inputs were built from, and a worker that does not provide
one of them refuses the model, naming the fields (``load(..., fields=...)``). A card without the
list (written before cards had one) loads as it always did.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from fraudgraph.models.features import FEATURE_SPEC
from fraudgraph.models.hetero import Relation
from fraudgraph.models.interface import KINDS, ScoringModel


class RegistryError(Exception):
    pass


@dataclass(frozen=True)
class ModelCard:
    version: str
    feature_spec: str
    feature_widths: dict[str, int]
    relations: list[list[str]]  # [src, name, dst] per relation, in the model's order
    kind: str  # which ScoringModel (models/interface.py: KINDS)
    architecture: dict[str, Any]  # its hyperparameters, as from_architecture takes them
    threshold: float  # fraud probability at which the target false-positive rate was met on validation
    target_fpr: float
    metrics: dict[str, Any] = field(default_factory=dict)
    trained_on: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""

    def build(self) -> ScoringModel:
        if self.kind not in KINDS:
            raise RegistryError(f"model {self.version}: unknown kind {self.kind!r} (known: {sorted(KINDS)})")
        rels = [Relation(*r) for r in self.relations]
        return KINDS[self.kind].from_architecture(self.feature_widths, rels, **self.architecture)


def card_for(model: ScoringModel, **fields: Any) -> dict[str, Any]:
    """The architecture half of a card, read off the model itself."""
    return {
        "feature_spec": FEATURE_SPEC,
        "feature_widths": dict(model.feature_widths),
        "relations": [[r.src, r.name, r.dst] for r in model.relations],
        "kind": model.kind,
        "architecture": model.architecture(),
        **fields,
    }


def missing_fields(card: ModelCard, present: Collection[str]) -> list[str]:
    """The fields the model was trained with that ``present`` (a worker's mapping) lacks, sorted."""
    return sorted(set(card.trained_on.get("fields", ())) - set(present))


def _read_card(raw: dict[str, Any]) -> ModelCard:
    if "kind" not in raw:  # written before cards named their kind: an R-GCN with its hyperparameters inline
        raw = dict(raw)
        raw["architecture"] = {"hidden": raw.pop("hidden"), "num_bases": raw.pop("num_bases")}
        raw["kind"] = "rgcn"
    return ModelCard(**raw)


class ModelRegistry:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    def versions(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "card.json").is_file())

    def current_version(self) -> str | None:
        try:
            return (self.root / "CURRENT").read_text().strip() or None
        except FileNotFoundError:
            return None

    def register(self, model: ScoringModel, card: dict[str, Any], make_current: bool = True) -> ModelCard:
        """Write a new version; its name is the time plus a hash of the weights, so two trainings
        never collide and the same weights are recognisable."""
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        digest = hashlib.sha256(buf.getvalue()).hexdigest()[:10]
        version = f"{model.kind}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{digest}"
        full = ModelCard(version=version, created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **card)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{version}.tmp"
        tmp.mkdir()
        (tmp / "model.pt").write_bytes(buf.getvalue())
        (tmp / "card.json").write_text(json.dumps(asdict(full), indent=2))
        tmp.rename(self.root / version)
        if make_current:
            self.promote(version)
        return full

    def promote(self, version: str) -> None:
        if not (self.root / version / "card.json").is_file():
            raise RegistryError(f"no model version {version!r} in {self.root}")
        tmp = self.root / ".CURRENT.tmp"
        tmp.write_text(version + "\n")
        os.replace(tmp, self.root / "CURRENT")

    def load(
        self, version: str, device: torch.device | str = "cpu", fields: Collection[str] | None = None
    ) -> tuple[ScoringModel, ModelCard]:
        """The model and its card; ``fields``: the event fields the caller's mapping provides (None:
        not checked), refused if the model was trained with one it lacks."""
        path = self.root / version
        try:
            card = _read_card(json.loads((path / "card.json").read_text()))
        except (OSError, TypeError, ValueError, KeyError) as err:
            raise RegistryError(f"model {version}: unreadable card: {err}") from err
        if card.feature_spec != FEATURE_SPEC:
            raise RegistryError(
                f"model {version} was trained on features {card.feature_spec!r}, this code encodes {FEATURE_SPEC!r}"
            )
        trained = card.trained_on.get("fields", [])
        if not isinstance(trained, list) or not all(isinstance(f, str) for f in trained):
            raise RegistryError(f"model {version}: unreadable card: trained_on.fields is not a list of field names")
        missing = missing_fields(card, fields) if fields is not None else []
        if missing:
            raise RegistryError(
                f"model {version} was trained with fields this worker's mapping does not provide: "
                f"{', '.join(missing)}; it would score them as missing. Map them, or train a model on this mapping"
            )
        model = card.build()  # an unknown kind raises RegistryError here
        try:
            model.load_state_dict(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
        except Exception as err:  # torch raises OSError, RuntimeError or pickle errors for a bad file
            raise RegistryError(f"model {version}: bad weights: {type(err).__name__}: {str(err)[:200]}") from err
        return model.to(device).eval(), card
