"""Process tracking of the local stack: pure process logic, run against real child processes."""

import os
import sys
import time

import pytest

from fraudgraph.stack.supervisor import (
    PidFile,
    PidRecord,
    StackError,
    group_members,
    proc_start_time,
    spawn,
    terminate,
    wait_until,
)


def test_pidfile_records_and_detects_a_live_process(tmp_path):
    pid = spawn([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "sleep.log")
    pidfile = PidFile(tmp_path / "sleep.json")
    record = pidfile.write(pid)
    assert pidfile.running() == record
    terminate(record, timeout=5)
    assert not record.alive() and pidfile.running() is None


def test_a_recycled_pid_is_not_taken_for_ours(tmp_path):
    # Same pid, different start time: what a pid file left over from before a reboot looks like.
    record = PidRecord(os.getpid(), proc_start_time(os.getpid()) + 1)
    assert not record.alive()
    terminate(record)  # must not signal this very process
    assert proc_start_time(os.getpid()) is not None


def test_terminate_reaches_the_whole_process_group(tmp_path):
    script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    pid = spawn([sys.executable, "-c", script], tmp_path / "tree.log")
    record = PidFile(tmp_path / "tree.json").write(pid)
    time.sleep(0.5)
    assert len(group_members(pid)) == 2
    terminate(record, timeout=5)
    assert group_members(pid) == []


def test_a_server_that_dies_while_starting_is_reported_with_its_log(tmp_path):
    log = tmp_path / "kafka.log"
    pid = spawn([sys.executable, "-c", "print('bind failed: address in use'); raise SystemExit(1)"], log)
    with pytest.raises(StackError) as err:
        wait_until(
            lambda: False, service="kafka", log_path=log, timeout=20, alive=lambda: proc_start_time(pid) is not None
        )
    assert "kafka exited during start-up" in str(err.value)
    assert str(log) in str(err.value) and "bind failed" in str(err.value)


def test_a_server_that_never_gets_ready_times_out_naming_it(tmp_path):
    with pytest.raises(StackError, match=r"neo4j was not ready after 1s; see its log .*neo4j.log"):
        wait_until(lambda: False, service="neo4j", log_path=tmp_path / "neo4j.log", timeout=1)
