"""What a servable fraud model is: the contract between a model, the registry and serving.

The registry stores a model as its card (``kind``, the graph schema, ``architecture()``) plus its
weights (``state_dict``), and rebuilds it with ``from_architecture``; serving encodes a batch of
``ScoringRequest``s against the model's schema (``models/batch.py``) and calls ``score_batch``.
Nothing else is asked of a model, so a second model is one new file implementing ``ScoringModel``
and one line in ``KINDS``; the R-GCN (``models/rgcn.py``) is the first.

Why ``score_batch`` returns per-relation shares beside the logits: every decision names the
relations that drove it (``streams/decision.py``), so a model must say how its logit splits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, Self

from torch import Tensor

from fraudgraph.models.batch import EncodedBatch
from fraudgraph.models.hetero import Relation
from fraudgraph.models.rgcn import HeteroRGCN


class ScoringModel(Protocol):
    kind: ClassVar[str]  # the card's name for the model's class
    node_types: list[str]  # in the global numbering order ``encode`` uses
    relations: list[Relation]
    feature_widths: dict[str, int]

    def architecture(self) -> dict[str, Any]:
        """JSON-able hyperparameters: ``from_architecture(widths, relations, **these)`` rebuilds it."""
        ...

    @classmethod
    def from_architecture(
        cls, feature_widths: Mapping[str, int], relations: Sequence[Relation], **architecture: Any
    ) -> ScoringModel: ...

    def score_batch(self, batch: EncodedBatch) -> tuple[Tensor, Tensor]:
        """Logits (B, 1) of the batch's targets and each relation's additive share of them (B, R, 1)."""
        ...

    # and what every torch module has: the registry and serving use these
    def state_dict(self) -> Mapping[str, Any]: ...
    def load_state_dict(self, state_dict: Mapping[str, Any]) -> Any: ...
    def to(self, device: Any) -> Self: ...
    def eval(self) -> Self: ...


KINDS: dict[str, type[ScoringModel]] = {HeteroRGCN.kind: HeteroRGCN}
