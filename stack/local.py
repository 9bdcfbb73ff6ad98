"""``fraudgraph stack up|down|status``: the whole local stack, without Docker.

Start order follows the dependencies: Kafka, PostgreSQL, Neo4j and Prometheus boot side by side
(they need nothing from each other; Prometheus simply finds the worker once it runs); Kafka Connect starts once Kafka answers, and registers Debezium's
connector once PostgreSQL holds the schema; the CDC watchdog starts last, to keep that connector
capturing (``cdc_watchdog.py``). ``up`` is idempotent: a service of ours that already
runs is only checked for readiness.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass

from fraudgraph.settings import Settings
from fraudgraph.stack import jars
from fraudgraph.stack.services import CdcWatchdog, Connect, Kafka, Neo4j, Postgres, Prometheus, Service
from fraudgraph.stack.supervisor import StackError


def services(settings: Settings) -> dict[str, Service]:
    """The stack's services. Prometheus only where Debian's package is installed (``setup.sh``
    installs it): the engine and its tests need no metrics server, and a stack without one must
    still count as fully up."""
    core = [Kafka(settings), Postgres(settings), Neo4j(settings), Connect(settings), CdcWatchdog(settings)]
    extra = [Prometheus(settings)] if shutil.which("prometheus") else []
    return {s.name: s for s in core + extra}


@dataclass
class ServiceState:
    name: str
    running: bool
    pid: int | None
    endpoint: str
    log: str


def up(settings: Settings, log=print) -> dict[str, float]:
    """Bring every service up and ready; return seconds each took to become ready."""
    t0 = time.monotonic()
    jars.fetch_all(settings.cache_dir, log)
    svc = services(settings)
    timings: dict[str, float] = {}
    try:
        if "prometheus" not in svc:
            log("prometheus: not installed, not started (apt-get install prometheus, or stack/setup.sh)")
        for name in ("kafka", "postgres", "neo4j", "prometheus"):
            if name in svc and svc[name].start():
                log(f"{name}: starting (log {svc[name].log_path})")
        for name in ("kafka", "postgres"):
            svc[name].wait_ready()
            timings[name] = time.monotonic() - t0
        if svc["connect"].start():
            log(f"connect: starting (log {svc['connect'].log_path})")
        for name in ("neo4j", "connect", "prometheus"):
            if name not in svc:
                continue
            svc[name].wait_ready()
            timings[name] = time.monotonic() - t0
        if svc["cdc-watchdog"].start():  # once the connector is registered (Connect's after_ready)
            log(f"cdc-watchdog: starting (log {svc['cdc-watchdog'].log_path})")
        svc["cdc-watchdog"].wait_ready()
    except StackError:
        log(
            "start-up failed; services already started are left running for inspection "
            "(`fraudgraph stack down` stops them)"
        )
        raise
    for name, service in svc.items():
        log(f"{name:9s} ready   {service.endpoint():45s} log {service.log_path}")
    log(f"stack up in {time.monotonic() - t0:.1f}s (state in {settings.stack_dir})")
    return timings


def down(settings: Settings, log=print) -> list[str]:
    """Stop every process this stack started, dependants first. Returns the names stopped."""
    stopped: list[str] = []
    svc = services(settings)
    for name in ("cdc-watchdog", "prometheus", "connect", "neo4j", "kafka", "postgres"):
        if name in svc and svc[name].stop():
            stopped.append(name)
            log(f"{name}: stopped")
    return stopped


def status(settings: Settings) -> list[ServiceState]:
    out = []
    for name, service in services(settings).items():
        record = service.running()
        out.append(
            ServiceState(
                name, record is not None, record.pid if record else None, service.endpoint(), str(service.log_path)
            )
        )
    return out
