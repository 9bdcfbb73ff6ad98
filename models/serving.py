"""Serving the current model to an asyncio worker: micro-batching, a device, and hot reload.

Micro-batching that adapts to load
==================================

Requests queue up; one loop takes them off in batches and runs each batch on a single inference
thread, so the event loop never waits on torch. While a batch runs, new requests accumulate, and
the next batch takes all of them (up to ``max_batch``): under light load a request is served alone
at once (no timer to wait out), under heavy load batches grow by themselves and throughput follows.
Only when the previous batch held more than one request (the sign of load) does the loop linger up
to ``max_delay_s`` for more, trading a bounded wait for a fuller batch.

Hot reload
==========

A watcher (``hot_reload.py``) polls the registry's CURRENT version. A new version is loaded and
warmed on its own thread while the old one keeps serving, then swapped in between two batches: no request waits for
a load and none is dropped. Each batch runs entirely on the model it started with, and every
``ModelOutput`` carries that model's version. A version that fails to load is logged and skipped
(the old model stays) until CURRENT changes again; so is one trained with an event field the
worker's mapping does not provide (``fields``; ``registry.py`` says why), with the missing fields
in the error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from fraudgraph.models.batch import ScoringRequest, encode
from fraudgraph.models.hot_reload import HotReloaded
from fraudgraph.models.incremental import NodeState
from fraudgraph.models.interface import ScoringModel
from fraudgraph.models.registry import ModelCard, ModelRegistry, RegistryError
from fraudgraph.models.rgcn import resolve_device


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_device(name)


@dataclass
class ModelOutput:
    score: float  # fraud probability
    logit: float
    version: str
    threshold: float  # the card's operating point (probability at the target FPR)
    shares: dict[str, float] = field(default_factory=dict)  # relation key -> its additive share of the logit


class LoadedModel:
    """One model version on one device, ready to score (synchronously: run it off the event loop)."""

    def __init__(self, model: ScoringModel, card: ModelCard, device: torch.device):
        self.model, self.card, self.device = model.to(device).eval(), card, device
        self.version = card.version
        self.relation_keys = [r.key for r in model.relations]

    @torch.no_grad()
    def infer(self, requests: Sequence[ScoringRequest]) -> list[ModelOutput]:
        logits, shares = self.model.score_batch(encode(requests, self.model).to(self.device, torch.float32))
        logits, shares = logits[:, 0].cpu(), shares[:, :, 0].cpu()
        # Python floats in one conversion each: indexing a tensor per value costs more than the forward.
        probs, logit_values, share_rows = torch.sigmoid(logits).tolist(), logits.tolist(), shares.tolist()
        keys, version, threshold = self.relation_keys, self.version, self.card.threshold
        return [
            ModelOutput(p, z, version, threshold, {keys[r]: s for r, s in enumerate(row) if s != 0})
            for p, z, row in zip(probs, logit_values, share_rows)
        ]

    def warm(self, example: Sequence[ScoringRequest] | None = None) -> None:
        """Run once so first real requests do not pay for lazy CUDA/kernel initialisation. Without
        an example of real traffic, a lone node of the last type with no neighbours will do."""
        if not example:
            t = self.model.node_types[-1]
            example = [ScoringRequest(NodeState(t, [0.0] * self.model.feature_widths[t]), {})]
        self.infer(example)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


@dataclass
class _Pending:
    request: ScoringRequest
    future: asyncio.Future
    dispatched: asyncio.Event | None = None  # set when its batch is handed to the inference thread


BatchObserver = Callable[[int, float, str], None]  # (batch size, inference seconds, device type)


class ModelServer(HotReloaded):
    """The asyncio front of the current model. ``score`` may be called from many coroutines."""

    def __init__(
        self,
        registry: ModelRegistry,
        device: str = "auto",
        max_batch: int = 512,
        max_delay_s: float = 0.002,
        reload_s: float = 5.0,
        observe: BatchObserver | None = None,
        fields: Collection[str] | None = None,
        threads: int = 0,
    ):
        """``fields``: the event fields (``Event.field``) the worker's mapping provides; a model
        trained with another is not loaded. None: not checked. ``threads``: torch's intra-op
        threads when serving on the CPU (process-wide; 0: torch's default, one per core)."""
        super().__init__(registry, reload_s)
        self.device = pick_device(device)
        if threads and self.device.type == "cpu":
            torch.set_num_threads(threads)
        self.fields = None if fields is None else frozenset(fields)
        self.max_batch, self.max_delay_s = max_batch, max_delay_s
        self.observe = observe
        self.loaded: LoadedModel | None = None
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="model-infer")
        self._tasks: list[asyncio.Task] = []
        self._last_batch = 0
        self._warm_example: list[ScoringRequest] | None = None
        # Set once the registry's current version was first looked at (and loaded, if any): a
        # decision made before it would say "no model" only because the worker had just started.
        self.started = asyncio.Event()

    async def start(self) -> None:
        try:
            await self.check_for_new_version()
        finally:
            self.started.set()
        self._tasks = [
            asyncio.create_task(self._batches(), name="model-batches"),
            asyncio.create_task(self._watch(), name="model-reload"),
        ]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._executor.shutdown(wait=True)

    async def score(
        self, requests: Sequence[ScoringRequest], dispatched: asyncio.Event | None = None
    ) -> list[ModelOutput]:
        """Scores in request order. Raises ``LookupError`` when no model is loaded (callers decide
        on rules alone), ``ValueError`` for a request whose state cannot be scored exactly.

        ``dispatched``, if given, is set once the last of these requests is on the inference
        thread: a caller with CPU work of its own (the rules) starts it then, so that work runs
        while the model does, rather than holding the event loop while the batch is still queued."""
        if self.loaded is None:
            raise LookupError("no model loaded")
        loop = asyncio.get_running_loop()
        pending = [_Pending(r, loop.create_future()) for r in requests]
        if pending:
            pending[-1].dispatched = dispatched
        elif dispatched is not None:
            dispatched.set()
        for p in pending:
            self._queue.put_nowait(p)
        return list(await asyncio.gather(*(p.future for p in pending)))

    async def _take(self) -> list[_Pending]:
        items = [await self._queue.get()]
        if self._last_batch > 1 and self.max_delay_s > 0:
            deadline = asyncio.get_running_loop().time() + self.max_delay_s
            while len(items) < self.max_batch:
                while len(items) < self.max_batch and not self._queue.empty():
                    items.append(self._queue.get_nowait())
                left = deadline - asyncio.get_running_loop().time()
                if len(items) >= self.max_batch or left <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self._queue.get(), left))
                except TimeoutError:
                    break
        while len(items) < self.max_batch and not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    async def _batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            items = await self._take()
            self._last_batch = len(items)
            model = self.loaded  # the whole batch runs on the model it started with
            assert model is not None  # score() queues nothing before a model is loaded, and none is unloaded
            started = time.perf_counter()
            handing = loop.run_in_executor(self._executor, model.infer, [p.request for p in items])
            for p in items:
                if p.dispatched is not None:
                    p.dispatched.set()
            try:
                outputs = await handing
            except Exception:  # noqa: BLE001 - see below
                # One bad request must not fail its batch-mates: score them one by one.
                for p in items:
                    try:
                        p.future.set_result((await loop.run_in_executor(self._executor, model.infer, [p.request]))[0])
                    except Exception as err:  # noqa: BLE001 - handed to the caller
                        p.future.set_exception(err)
                continue
            if self.observe:
                self.observe(len(items), time.perf_counter() - started, model.device.type)
            for p, out in zip(items, outputs):
                if not p.future.done():  # a caller may have been cancelled
                    p.future.set_result(out)
            if self._warm_example is None:
                self._warm_example = [items[0].request]

    def _load(self, version: str) -> LoadedModel:
        model, card = self.registry.load(version, self.device, self.fields)
        loaded = LoadedModel(model, card, self.device)
        try:
            loaded.warm(self._warm_example)
        except ValueError as err:  # the example no longer fits this architecture
            raise RegistryError(f"warm-up failed: {err}") from err
        return loaded
