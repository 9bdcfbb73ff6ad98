"""Serving the current recommender to the asyncio worker: batched top-K on a device, hot reload.

The same contract as ``models/serving.py`` for the fraud model: torch runs on one inference thread
(the event loop never waits on it), and the watcher of ``hot_reload.py`` swaps a new version in
only once it is loaded and its item matrix computed.

Per version the item side is computed once (``item_vectors``: every merchant's output embedding
times the decoder's diagonal), so a batch of B requests is one (B, dim) x (dim, M) product and a
top-n on the device; the worker's agent hands it a whole micro-batch of requests at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

from fraudgraph.models.hot_reload import HotReloaded
from fraudgraph.models.recommend import RecsModel, UserInput, encode_users, top_candidates
from fraudgraph.models.recs_registry import RecsCard, RecsRegistry
from fraudgraph.models.serving import pick_device


class LoadedRecs:
    """One recommender version on one device, its item matrix ready (call ``candidates`` off the loop)."""

    def __init__(self, model: RecsModel, card: RecsCard, device: torch.device):
        self.model, self.card, self.device, self.version = model.to(device).eval(), card, device, card.version
        self.items = list(card.items)
        self.index = {m: i for i, m in enumerate(self.items)}
        with torch.no_grad():
            self.hidden = self.model.item_hidden()
            self.vectors = self.model.item_vectors(self.hidden)
        self.prior = {m: float(p) for m, p in zip(self.items, self.model.item_risk.cpu().tolist())}

    @torch.no_grad()
    def candidates(
        self, users: Sequence[UserInput], exclude: Sequence[set[Any]], n: int
    ) -> list[list[tuple[Any, float]]]:
        """Per user, up to ``n`` (merchant id, score) best first, its excluded merchants left out."""
        batch = encode_users(users, self.model, self.index).to(self.device)
        scores = self.model.scores(batch, self.hidden, self.vectors)
        top, top_index = top_candidates(scores, [[self.index[m] for m in ex if m in self.index] for ex in exclude], n)
        values, indices = top.cpu().tolist(), top_index.cpu().tolist()
        return [[(self.items[i], v) for i, v in zip(ix, vs) if v != float("-inf")] for ix, vs in zip(indices, values)]


class RecsServer(HotReloaded):
    what = "recs model"

    def __init__(self, registry: RecsRegistry, device: str = "auto", reload_s: float = 5.0):
        super().__init__(registry, reload_s)
        self.device = pick_device(device)
        self.loaded: LoadedRecs | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="recs-infer")
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self.check_for_new_version()
        self._task = asyncio.create_task(self._watch(), name="recs-reload")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def candidates(
        self, users: Sequence[UserInput], exclude: Sequence[set[Any]], n: int
    ) -> tuple[LoadedRecs, list[list[tuple[Any, float]]]]:
        """The model that answered and its candidates; ``LookupError`` when none is loaded."""
        loaded = self.loaded
        if loaded is None:
            raise LookupError("no recommendation model loaded")
        out = await asyncio.get_running_loop().run_in_executor(self._executor, loaded.candidates, users, exclude, n)
        return loaded, out

    def _load(self, version: str) -> LoadedRecs:
        model, card = self.registry.load(version, self.device)
        return LoadedRecs(model, card, self.device)
