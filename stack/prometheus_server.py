"""Prometheus from Debian's ``prometheus`` package: its configuration, generated from Settings.

The local stack runs it on loopback, scraping the worker's and the CDC watchdog's ``/metrics`` and evaluating the alert
rules of ``stack/observability/alerts.yml``, the same rules file docker-compose mounts. The config
is JSON, which is YAML too, so no YAML writer is needed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from fraudgraph.settings import Settings
from fraudgraph.stack.supervisor import StackError

OBSERVABILITY = Path(__file__).resolve().parent / "observability"
RULES_FILE = OBSERVABILITY / "alerts.yml"
DASHBOARDS = OBSERVABILITY / "dashboards"
JOB = "fraudgraph-worker"
WATCHDOG_JOB = "fraudgraph-cdc-watchdog"  # stack/cdc_watchdog.py


def binary(name: str = "prometheus") -> str:
    found = shutil.which(name)
    if not found:
        raise StackError(f"{name} not found: apt-get install prometheus (stack/setup.sh does)")
    return found


def _local(settings: Settings, port: int) -> str:
    """Where this machine reaches a server of ours bound to ``worker_web_host`` (0.0.0.0: loopback)."""
    host = settings.worker_web_host
    return f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"


def scrape_targets(settings: Settings) -> list[str]:
    if settings.prometheus_targets:
        return [t.strip() for t in settings.prometheus_targets.split(",") if t.strip()]
    return [_local(settings, settings.worker_web_port)]


def config(settings: Settings, rules_file: Path = RULES_FILE) -> dict:
    interval = f"{settings.prometheus_scrape_interval_s}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(rules_file)],
        "scrape_configs": [
            {"job_name": JOB, "static_configs": [{"targets": scrape_targets(settings)}]},
            {"job_name": WATCHDOG_JOB, "static_configs": [{"targets": [_local(settings, settings.cdc_watchdog_port)]}]},
        ],
    }


def write_config(settings: Settings, home: Path) -> Path:
    path = home / "prometheus.yml"
    path.write_text(json.dumps(config(settings), indent=2) + "\n")
    return path


def command(settings: Settings, home: Path) -> list[str]:
    return [
        binary(),
        f"--config.file={home / 'prometheus.yml'}",
        f"--storage.tsdb.path={home / 'data'}",
        f"--web.listen-address=127.0.0.1:{settings.prometheus_port}",
        "--storage.tsdb.retention.time=7d",
        "--web.enable-lifecycle",  # POST /-/reload picks up a regenerated config
    ]
