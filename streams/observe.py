"""Wires the worker's observability into a Faust app: the one call ``create_app`` makes.

Kept out of ``app.py`` so the pipeline reads as a pipeline: this attaches what watches it (versions,
the e2e latency clock on score acknowledgement, the online quality join and its rebuild on every
rebalance, and a timer for consumer lag and state size) and returns the ``QualityJoin`` the
pipeline feeds.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fraudgraph.streams import latency, metrics, state_size
from fraudgraph.streams.lag import LagReporter
from fraudgraph.streams.quality import Window
from fraudgraph.streams.quality_join import QualityJoin
from fraudgraph.streams.versions import publish as publish_versions

log = logging.getLogger(__name__)

REPORT_INTERVAL_S = 5.0  # lag and state size; Prometheus scrapes every 5 s by default


def attach_observability(
    app, *, scores, nodes, restored: Callable[[], Awaitable], versions, topics, cohorts: dict[str, Window]
) -> QualityJoin:
    """``versions()`` returns the (model, policy) versions in force; they are re-published with
    every lag report, so a hot reload shows on the dashboards within one interval."""
    scores.on_acked = latency.score_acked
    join = QualityJoin(cohorts)
    metrics.QUALITY.trackers = join.trackers
    lag = LagReporter("worker", topics)

    @app.on_rebalance_complete.connect
    async def rebuild_quality(sender, **kwargs):
        # After a restart or rebalance the scores table and the node states hold exactly what was
        # durably decided and labelled: derive the windows from them (quality.py says why not
        # persist them). Faust recovers the table; ``restored()`` waits for the node states.
        await restored()
        try:
            join.rebuild(scores.items, nodes.get)
        except Exception:  # noqa: BLE001 -- quality metrics must never stop scoring
            log.exception("rebuilding the quality tracker failed; it starts empty")

    @app.timer(interval=REPORT_INTERVAL_S)
    async def report_lag_and_state():
        try:
            publish_versions(*versions())
            await lag.report_faust(app.consumer)
            state_size.report({"node-state": len(nodes), "scores": state_size.table_entries(scores)})
        except Exception as err:  # noqa: BLE001 -- e.g. during a rebalance; next tick retries
            log.debug("lag/state report skipped: %s", err)

    return join
