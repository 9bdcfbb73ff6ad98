"""The graph sink (``graph_sink.py``) in a process of its own, started and watched by the worker.

Why a process: the sink decodes every CDC event again and drives the Neo4j driver, CPU-bound Python
that took about a sixth of the worker's event loop and delayed scoring by as much. In a process of
its own it runs on another core, and a slow Neo4j cannot hold the scoring loop. It keeps its consumer
group and its guarantees, and its metrics still come from the worker's ``/metrics`` (one scrape
target, as before): the sink writes its samples to a file every second, the worker serves them with
its own, the way node_exporter's textfile collector does.

Lifetime: the worker starts it with the worker's own settings and stops it with SIGTERM (the sink
flushes, commits and exits) when it stops. If the sink exits on its own (a bug: it outlives Neo4j and
Kafka outages by retrying), the worker stops too and its supervisor restarts both, as when the sink
was a task that crashed the worker. If the worker is killed, the kernel sends the sink SIGTERM
(``PR_SET_PDEATHSIG``, Linux), so no orphan keeps consuming beside the worker's successor.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import sys
from pathlib import Path

from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fraudgraph.settings import Settings, load_settings

log = logging.getLogger(__name__)

METRICS_INTERVAL_S = 1.0
STOP_GRACE_S = 20.0  # the sink's own flush grace (graph_sink.SHUTDOWN_GRACE_S) and its exit
LAG = "fraudgraph_consumer_lag_messages"  # shared with the worker: the sink's samples are group="graph"


def metrics_file(settings: Settings) -> Path:
    return settings.worker_data_dir / "graph-sink.prom"


async def supervise(settings: Settings) -> None:
    """Run the sink process until cancelled (then stop it gracefully); raise if it exits first."""
    metrics_file(settings).unlink(missing_ok=True)  # no samples of an earlier run
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fraudgraph.streams.graph_process", env=settings.environ()
    )
    log.info("graph sink started (pid %d)", proc.pid)
    try:
        code = await proc.wait()
    except asyncio.CancelledError:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE_S)
            except TimeoutError:
                log.warning("graph sink did not stop within %.0fs; killed (its offsets replay)", STOP_GRACE_S)
                proc.kill()
        raise
    raise RuntimeError(f"the graph sink process exited with code {code}")


def exposition(settings: Settings) -> bytes:
    """The worker's metrics with the graph sink's merged in: one family per name, and where both
    processes have a series (the worker's graph metrics exist at zero), the sink's."""
    families = {m.name: m for m in REGISTRY.collect()}
    try:
        text = metrics_file(settings).read_text()
    except OSError:  # not written yet
        text = ""
    for family in text_string_to_metric_families(text):
        mine = families.get(family.name)
        if mine is None:
            families[family.name] = family
            continue
        theirs = {_series(s) for s in family.samples}
        mine.samples = [s for s in mine.samples if _series(s) not in theirs]
        mine.samples.extend(family.samples)
    return generate_latest(_Families(list(families.values())))


def _series(sample) -> tuple:
    """What identifies a time series in an exposition: its sample name and label set."""
    return sample.name, tuple(sorted(sample.labels.items()))


class _Families:
    def __init__(self, families):
        self.families = families

    def collect(self):
        return self.families


def _graph_samples() -> str:
    """This process's graph metrics, and its lag samples only (the worker reports its own lag)."""
    keep = []
    for family in REGISTRY.collect():
        if family.name == LAG:
            family.samples = [s for s in family.samples if s.labels.get("group") == "graph"]
        elif not family.name.startswith("fraudgraph_graph_"):
            continue
        keep.append(family)
    return generate_latest(_Families(keep)).decode()


def _write_metrics(path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(_graph_samples())
    tmp.replace(path)  # atomic: the worker never reads half a file


def _die_with_parent() -> None:
    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the worker's stop still ends it
        log.warning("cannot ask to be stopped with the worker (prctl); a killed worker leaves this sink running")
    if os.getppid() == 1:  # the worker died before prctl took effect
        sys.exit(0)


async def _run(settings: Settings) -> None:
    from fraudgraph.connectors.mapping import load_mapping
    from fraudgraph.streams.graph_sink import run_graph_sink

    mapping = load_mapping(settings.mapping_file or None)
    sink = asyncio.ensure_future(run_graph_sink(settings, mapping, mapping.topics(settings.topic_prefix)))
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, sink.cancel)
    path = metrics_file(settings)
    try:
        while not sink.done():
            _write_metrics(path)
            await asyncio.wait((sink,), timeout=METRICS_INTERVAL_S)
        await sink
    except asyncio.CancelledError:
        log.info("graph sink stopped")
    finally:
        _write_metrics(path)


def main() -> None:
    _die_with_parent()
    logging.basicConfig(
        level=logging.INFO, format="[%(asctime)s] [graph-sink %(process)d] %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(_run(load_settings()))


if __name__ == "__main__":
    main()
