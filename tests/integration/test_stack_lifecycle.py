"""`fraudgraph stack up` is idempotent, `stack down` stops exactly what it started, failures name
the service and its log. Runs a second, private stack on other ports so the shared one is untouched."""

import shutil
import socket
from pathlib import Path

import pytest

from fraudgraph.stack import local
from fraudgraph.stack.services import Postgres
from fraudgraph.stack.supervisor import StackError, proc_start_time


def private_stack(settings, root: Path, offset: int = 10000):
    return settings.replace(
        stack_dir=root / "stack",
        kafka_bootstrap=f"127.0.0.1:{9092 + offset}",
        kafka_controller_port=9093 + offset,
        neo4j_uri=f"bolt://127.0.0.1:{7687 + offset}",
        neo4j_http_port=7474 + offset,
        pg_port=5432 + offset,
        connect_url=f"http://127.0.0.1:{8083 + offset}",
        prometheus_port=9090 + offset,
        cdc_watchdog_port=6067 + offset,
    )


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and proc_start_time(int(entry.name)) is not None:
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.fixture
def private(settings, tmp_path):
    s = private_stack(settings, tmp_path)
    yield s
    local.down(s)
    shutil.rmtree(Postgres(s).cluster, ignore_errors=True)


def test_up_twice_then_down_leaves_no_process_running(private):
    local.up(private)
    first = {st.name: st.pid for st in local.status(private)}
    assert all(first.values()), first
    local.up(private)  # harmless: the same processes keep running
    assert {st.name: st.pid for st in local.status(private)} == first

    stopped = local.down(private)
    assert sorted(stopped) == sorted(first)
    assert all(proc_start_time(pid) is None for pid in first.values())
    assert processes_mentioning(str(private.stack_dir)) == []
    assert processes_mentioning(str(Postgres(private).cluster)) == []
    assert not any(st.running for st in local.status(private))
    assert local.down(private) == []  # nothing left to stop


def test_busy_port_is_reported_with_service_and_log(settings, tmp_path):
    s = private_stack(settings, tmp_path, offset=11000)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", s.kafka_port))
        squatter.listen()
        with pytest.raises(StackError) as err:
            local.up(s)
    message = str(err.value)
    assert "kafka" in message and str(s.kafka_port) in message and "kafka.log" in message
    assert not any(st.running for st in local.status(s))


def test_server_that_fails_to_start_names_itself_and_its_log(settings, tmp_path):
    # Same port for the broker and controller listeners: Kafka refuses the configuration.
    s = private_stack(settings, tmp_path, offset=12000)
    s = s.replace(kafka_controller_port=s.kafka_port)
    try:
        with pytest.raises(StackError) as err:
            local.up(s)
        message = str(err.value)
        assert (
            message.startswith("kafka ")
            and "listener" in message
            and str(s.stack_dir / "logs" / "kafka.log") in message
        )
    finally:
        local.down(s)
        shutil.rmtree(Postgres(s).cluster, ignore_errors=True)
