"""``fraudgraph worker``: run the Faust app until SIGTERM/SIGINT (Faust shuts down gracefully)."""

from __future__ import annotations

import gc
import logging

from fraudgraph.settings import Settings

log = logging.getLogger(__name__)

# Python's cyclic collector runs a young collection every 700 container allocations and, every
# 10 of those, an older one; the hot path allocates many small containers per event (a decoded
# envelope, a node state's buckets), and with a few hundred MB of live state it took a third of the
# pipeline's time (in process: 716 tx/s with the defaults, 1,102 with these thresholds, 1,134 with
# the collector off; benchmarks/results/performance.md). Collections stay on, for reference cycles
# (asyncio futures, tracebacks), but rarer.
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Move what start-up built (modules, the app, its services) out of the collector's sight, and
    collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run_worker(settings: Settings, loglevel: str = "info") -> int:
    import faust

    from fraudgraph.streams.app import create_app, worker_topics
    from fraudgraph.streams.changelog import node_state_topic
    from fraudgraph.streams.topics import check_partitions, ensure_topics

    class Worker(faust.Worker):
        async def on_first_start(self) -> None:
            await super().on_first_start()  # sets logging up: a line logged before it would be lost
            log.info("starting worker with settings %s", settings.redacted())

    # The CDC topics too: subscribing to a topic that does not exist yet would leave it unread.
    # fraud.scores and the node-state changelog are compacted: the worker restores both from them.
    topics = worker_topics(settings)
    compacted = {"cleanup.policy": "compact"}
    ensure_topics(
        settings,
        topics,
        settings.topic_replication_factor,
        {settings.scores_topic: compacted, node_state_topic(settings): compacted},
    )
    # A score goes to the scores partition numbered like its transaction's CDC partition, and Faust
    # co-partitions the agents' topics with the tables: every topic but the dead letters must agree.
    check_partitions(settings, {t: n for t, n in topics.items() if t != settings.dead_letter_topic})
    settings.worker_data_dir.mkdir(parents=True, exist_ok=True)  # Faust expects it to exist
    app = create_app(settings)
    tune_gc()
    worker = Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()  # returns only when the worker stops
    return 0
