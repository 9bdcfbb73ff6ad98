"""Wires the worker's observability into a Faust app: the one call ``create_app`` makes.

Kept out of ``app.py`` so the pipeline reads as a pipeline: this attaches what watches it (versions,
the online quality join, and a timer for consumer lag and state size) and returns the
``QualityJoin`` the pipeline feeds; the app rebuilds it whenever it restores its state.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fraudgraph.streams import metrics
from fraudgraph.streams.quality import Window
from fraudgraph.streams.quality_join import QualityJoin
from fraudgraph.streams.versions import publish as publish_versions

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 5.0  # lag and state size; Prometheus scrapes every 5 s by default


def attach_observability(
    app,
    *,
    versions: Callable[[], tuple[str, str]],
    entries: Callable[[], dict[str, int]],
    report_lag: Callable[[], Awaitable[object]],
    cohorts: dict[str, Window],
) -> QualityJoin:
    """``versions()`` returns the (model, policy) versions in force; they are re-published with
    every lag report, so a hot reload shows on the dashboards within one interval."""
    join = QualityJoin(cohorts)
    metrics.QUALITY.trackers = join.trackers

    @app.timer(interval=REPORT_INTERVAL_S)
    async def report_lag_and_state():
        try:
            publish_versions(*versions())
            await report_lag()
            for name, n in entries().items():
                metrics.STATE_ENTRIES.labels(name).set(n)
        except Exception as err:  # noqa: BLE001 -- e.g. during a rebalance; next tick retries
            log.debug("lag/state report skipped: %s", err)

    return join
