"""Shared fixtures. Integration tests get the real local stack, brought up once per session.

If the stack was already running (a developer's `fraudgraph stack up`), the tests use it and leave
it running; otherwise they start it and stop it at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from fraudgraph.settings import Settings, load_settings

from support.stack import (
    TopicReader,
    cdc_topics,
    commit_group_offsets,
    delete_test_topics,
    free_port,
    scrape,
    topic_names,
)


def pytest_configure(config):
    # The venv is shared between clones (editable install): tests, and the worker subprocesses they
    # start, must run the code of *this* checkout, not whichever clone last ran `make`.
    from pathlib import Path

    import fraudgraph

    here = Path(__file__).resolve().parents[1]
    if Path(fraudgraph.__file__).resolve().parent != here:
        pytest.exit(
            f"fraudgraph is imported from {Path(fraudgraph.__file__).parent}, not this checkout {here}: "
            "run `make setup` (or pip install -e '.[test]') first",
            returncode=4,
        )


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def stack(settings: Settings) -> Iterator[Settings]:
    from fraudgraph.stack import local

    already_up = all(s.running for s in local.status(settings))
    local.up(settings)
    before = topic_names(settings)
    yield settings
    delete_test_topics(settings, topic_names(settings) - before)
    if not already_up:
        local.down(settings)


@pytest.fixture
def topic_reader(stack):
    readers = []

    def make(topic: str, from_now: bool = False) -> TopicReader:
        readers.append(TopicReader(stack, topic, from_now))
        return readers[-1]

    yield make
    for r in readers:
        r.close()


@pytest.fixture
def worker_process(stack, tmp_path):
    """Start `fraudgraph worker` as a real subprocess (own consumer group and port); stopped with
    SIGTERM at the end of the test. ``from_now=True`` starts its consumer groups at the current end
    of the CDC topics (which hold every earlier run's events)."""
    started = []

    def start(from_now: bool = False, **env_overrides) -> dict:
        port = int(env_overrides.get("FRAUDGRAPH_WORKER_WEB_PORT") or free_port())
        env = dict(
            os.environ,
            FRAUDGRAPH_WORKER_ID=f"test-worker-{uuid.uuid4().hex[:8]}",
            FRAUDGRAPH_WORKER_WEB_PORT=str(port),
            FRAUDGRAPH_KAFKA_BOOTSTRAP=stack.kafka_bootstrap,
            FRAUDGRAPH_WORKER_DATA_DIR=str(tmp_path / "worker-data"),
        )
        env.update(env_overrides)
        if from_now:
            from fraudgraph.streams.graph_sink import graph_group

            worker_id = env["FRAUDGRAPH_WORKER_ID"]
            topics = cdc_topics(stack.replace(topic_prefix=env.get("FRAUDGRAPH_TOPIC_PREFIX", stack.topic_prefix)))
            for group in (worker_id, graph_group(stack.replace(worker_id=worker_id))):
                commit_group_offsets(stack, group, topics)
        log_path = tmp_path / f"worker-{len(started)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "fraudgraph.cli", "worker"],
            env=env,
            stdout=open(log_path, "wb"),
            stderr=subprocess.STDOUT,
        )
        started.append(proc)
        deadline = time.monotonic() + 90
        while True:
            try:
                scrape(port)
                break
            except OSError:
                assert proc.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "worker did not come up"
                time.sleep(0.5)
        return {"port": port, "proc": proc, "log": log_path, "worker_id": env["FRAUDGRAPH_WORKER_ID"]}

    yield start
    for proc in started:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def secured_neo4j(stack, tmp_path_factory) -> Iterator[Settings]:
    """A private Neo4j with authentication on (free ports, temp folder); settings that reach it.
    Shared by the security tests; the shared stack's Neo4j is left alone."""
    from support.secured_services import start_secured_neo4j, stop_neo4j

    secured = start_secured_neo4j(stack, tmp_path_factory.mktemp("secured-neo4j"))
    yield secured
    stop_neo4j(secured)


@pytest.fixture(scope="session")
def secured_kafka(stack, tmp_path_factory):
    """A private broker whose client listener is SASL_SSL (SCRAM-SHA-256/512, TLS client certificates)."""
    from support.secured_services import start_secured_kafka

    secured = start_secured_kafka(stack, tmp_path_factory.mktemp("secured-kafka"))
    yield secured
    secured.broker.stop()
