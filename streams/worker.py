"""``fraudgraph worker``: run the Faust app until SIGTERM/SIGINT (Faust shuts down gracefully)."""

from __future__ import annotations

import logging

from fraudgraph.settings import Settings

log = logging.getLogger(__name__)


def run_worker(settings: Settings, loglevel: str = "info") -> int:
    import faust

    from fraudgraph.streams.app import create_app, worker_topics
    from fraudgraph.streams.topics import ensure_topics

    class Worker(faust.Worker):
        async def on_first_start(self) -> None:
            await super().on_first_start()  # sets logging up: a line logged before it would be lost
            log.info("starting worker with settings %s", settings.redacted())

    # The CDC topics too: subscribing to a topic that does not exist yet would leave it unread.
    # fraud.scores doubles as the scores table's changelog: compacted, one record per transaction.
    ensure_topics(settings, worker_topics(settings), settings.topic_replication_factor,
                  {settings.scores_topic: {"cleanup.policy": "compact"}})
    settings.worker_data_dir.mkdir(parents=True, exist_ok=True)  # Faust expects it to exist
    app = create_app(settings)
    worker = Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()  # returns only when the worker stops
    return 0
