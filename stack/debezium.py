"""Debezium's PostgreSQL connector: its configuration and its registration with Kafka Connect.

One function builds the configuration from Settings, used by ``stack up`` and by the
``connector-init`` service of ``docker-compose.yml`` (``fraudgraph stack connector``), so both
paths capture the database the same way.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from fraudgraph.settings import Settings
from fraudgraph.stack.source_db import PUBLICATION
from fraudgraph.stack.supervisor import StackError

CDC_PARTITIONS = 4
HEARTBEAT_MS = 5000
SLOT = "fraudgraph"  # the replication slot the connector streams from


def connector_config(settings: Settings) -> dict[str, str]:
    return {
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "plugin.name": "pgoutput",
        "database.hostname": settings.pg_host,
        "database.port": str(settings.pg_port),
        "database.user": settings.pg_user,
        "database.password": settings.pg_password,
        "database.dbname": settings.pg_database,
        "topic.prefix": settings.topic_prefix,
        "slot.name": SLOT,
        "publication.name": PUBLICATION,
        "publication.autocreate.mode": "disabled",
        "snapshot.mode": "initial",
        # The engine accepts precise, double and string; precise loses nothing.
        "decimal.handling.mode": "precise",
        "tombstones.on.delete": "true",
        # Debezium skips TRUNCATE by default; the engine wants to see it (and report it) instead.
        "skipped.operations": "none",
        # CDC topics are created by Connect with an explicit partition count (not broker defaults);
        # the row's primary key is the record key, so each row's changes stay ordered.
        "topic.creation.default.partitions": str(CDC_PARTITIONS),
        "topic.creation.default.replication.factor": "1",
        # A live streaming task writes a record to the heartbeat topic every interval, changes or
        # not: the CDC watchdog (cdc_watchdog.py) reads "no heartbeat for a while" as a wedged task.
        "heartbeat.interval.ms": str(HEARTBEAT_MS),
    }


def heartbeat_topic(settings: Settings) -> str:
    return f"__debezium-heartbeat.{settings.topic_prefix}"


def _request(method: str, url: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def connector_status(settings: Settings) -> dict | None:
    try:
        return _request("GET", f"{settings.connect_url}/connectors/{settings.connector_name}/status")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def ensure_cdc_topics(settings: Settings) -> None:
    """Create every captured table's topic up front (as Connect would on first write), so the
    worker and readers can subscribe and position themselves before the first change arrives."""
    from fraudgraph.connectors.mapping import load_mapping
    from fraudgraph.streams.topics import TopicError, ensure_topics

    wanted = load_mapping(settings.mapping_file or None).topics(settings.topic_prefix)
    try:
        ensure_topics(settings, {t: CDC_PARTITIONS for t in wanted}, settings.topic_replication_factor)
    except TopicError as exc:
        raise StackError(f"CDC topics: {exc}") from exc


def register_connector(settings: Settings, timeout: float = 60.0) -> dict:
    """Create or update the connector (PUT is idempotent) and wait until its task runs."""
    ensure_cdc_topics(settings)
    base = f"{settings.connect_url}/connectors/{settings.connector_name}"
    _request("PUT", f"{base}/config", connector_config(settings))
    deadline = time.monotonic() + timeout
    status: dict | None = None
    while time.monotonic() < deadline:
        try:
            status = connector_status(settings)
        except urllib.error.HTTPError:
            status = None
        tasks = (status or {}).get("tasks") or []
        if status is not None and tasks and all(t["state"] == "RUNNING" for t in tasks):
            return status
        failed = [t for t in tasks if t["state"] == "FAILED"]
        if failed:
            trace = failed[0].get("trace", "").splitlines()[:3]
            raise StackError(f"Debezium connector {settings.connector_name} failed: {' | '.join(trace)}")
        time.sleep(0.5)
    raise StackError(f"Debezium connector {settings.connector_name} not running after {timeout:.0f}s: {status}")
