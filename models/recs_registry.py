"""The recommender's versions on disk: the fraud registry's layout and CURRENT pointer
(``models/registry.py``: atomic version directories, promote and roll back by rewriting one line),
in its own directory (``<model_dir>/recs`` by default) with its own card.

The card names the catalogue: ``items`` are the merchant ids of the item matrix in order, so a
version is self-contained (its merchant vectors, their features and fraud-model priors are buffers
in ``model.pt``).
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from fraudgraph.models.features import FEATURE_SPEC
from fraudgraph.models.recommend import RecsModel
from fraudgraph.models.registry import ModelRegistry, RegistryError

KIND = "rgcn-distmult"


@dataclass(frozen=True)
class RecsCard:
    version: str
    kind: str
    feature_spec: str
    dim: int
    user_width: int
    history_relations: list[str]
    user_mean_widths: dict[str, int]
    item_mean_widths: dict[str, int]
    items: list[int]  # merchant id of each row of the item matrix
    metrics: dict[str, Any] = field(default_factory=dict)
    trained_on: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""

    def build(self) -> RecsModel:
        return RecsModel(
            len(self.items),
            self.user_width,
            self.history_relations,
            self.user_mean_widths,
            self.item_mean_widths,
            self.dim,
        )


class RecsRegistry(ModelRegistry):
    def register(self, model: RecsModel, card: dict[str, Any], make_current: bool = True) -> RecsCard:  # type: ignore[override]
        """``card`` holds ``items``, ``metrics`` and ``trained_on``; the architecture is read off the model."""
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        digest = hashlib.sha256(buf.getvalue()).hexdigest()[:10]
        version = f"recs-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{digest}"
        if len(card["items"]) != model.num_items:
            raise ValueError(f"{len(card['items'])} item ids for a model of {model.num_items} items")
        full = RecsCard(
            version=version,
            kind=KIND,
            feature_spec=FEATURE_SPEC,
            dim=model.dim,
            user_width=model.user_width,
            history_relations=model.history_relations,
            user_mean_widths=model.user_mean_widths,
            item_mean_widths=model.item_mean_widths,
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **card,
        )
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{version}.tmp"
        tmp.mkdir()
        (tmp / "model.pt").write_bytes(buf.getvalue())
        (tmp / "card.json").write_text(json.dumps(asdict(full)))
        tmp.rename(self.root / version)
        if make_current:
            self.promote(version)
        return full

    def load(self, version: str, device: torch.device | str = "cpu") -> tuple[RecsModel, RecsCard]:  # type: ignore[override]
        path = self.root / version
        try:
            card = RecsCard(**json.loads((path / "card.json").read_text()))
        except (OSError, TypeError, ValueError) as err:
            raise RegistryError(f"recs model {version}: unreadable card: {err}") from err
        if card.kind != KIND or card.feature_spec != FEATURE_SPEC:
            raise RegistryError(
                f"recs model {version} is {card.kind!r} on features {card.feature_spec!r}; "
                f"this code serves {KIND!r} on {FEATURE_SPEC!r}"
            )
        model = card.build()
        try:
            model.load_state_dict(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
        except Exception as err:  # torch raises OSError, RuntimeError or pickle errors for a bad file
            raise RegistryError(f"recs model {version}: bad weights: {type(err).__name__}: {str(err)[:200]}") from err
        return model.to(device).eval(), card
