"""``fraudgraph worker``: run the Faust app until SIGTERM/SIGINT (Faust shuts down gracefully)."""

from __future__ import annotations

import logging

from fraudgraph.settings import Settings


def run_worker(settings: Settings, loglevel: str = "info") -> int:
    import faust

    from fraudgraph.streams.app import create_app

    logging.getLogger(__name__).info("starting worker with settings %s", settings.redacted())
    app = create_app(settings)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()  # returns only when the worker stops
    return 0
