"""Keeping a registry's CURRENT version loaded, for the fraud model server and the recommender
server alike.

A watcher polls CURRENT every ``reload_s``. A new version is loaded (and, by the subclass's
``_load``, warmed) on a worker thread while the old one keeps serving, then swapped in with one
assignment, so a caller holding the old model finishes on it. A version that fails to load is
logged and skipped, the old one serving on, until CURRENT names another: a bad checkpoint must
never take down a model that works, nor be retried every few seconds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fraudgraph.models.registry import RegistryError

log = logging.getLogger(__name__)


class HotReloaded:
    """Base of a server whose ``loaded`` follows ``registry.current_version()``."""

    what = "model"  # for log lines

    def __init__(self, registry: Any, reload_s: float):
        self.registry, self.reload_s = registry, reload_s
        self.loaded: Any = None
        self._failed_version: str | None = None

    @property
    def version(self) -> str | None:
        return self.loaded.version if self.loaded else None

    def _load(self, version: str) -> Any:
        """Load (and warm) ``version``; runs on a worker thread; raise ``RegistryError`` to skip it."""
        raise NotImplementedError

    async def check_for_new_version(self) -> bool:
        """Load and swap in the registry's CURRENT version if it is new; True if swapped."""
        version = self.registry.current_version()
        if version is None or version == self.version or version == self._failed_version:
            return False
        try:
            loaded = await asyncio.to_thread(self._load, version)
        except RegistryError as err:
            self._failed_version = version
            log.error("%s %s not loaded, still serving %s: %s", self.what, version, self.version or "nothing", err)
            return False
        previous, self.loaded = self.version, loaded
        log.info("serving %s %s on %s (was %s)", self.what, version, getattr(loaded, "device", "?"), previous)
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.reload_s)
            try:
                await self.check_for_new_version()
            except Exception:  # noqa: BLE001 - the watcher must outlive any one bad version
                log.exception("%s reload check failed", self.what)
