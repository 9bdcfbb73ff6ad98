"""Start, track and stop the local stack's server processes.

Every process the stack starts gets a pid file holding its pid *and* its kernel start time, so
``stack down`` stops exactly the processes it started: a pid recycled by an unrelated process
after a reboot or crash is never signalled. Servers run in their own session (process group) so a
stop reaches the whole tree (a JVM and any helpers it forked) and a Ctrl-C in the terminal that ran
``stack up`` does not take them down.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


class StackError(RuntimeError):
    """A service failed to start or stop; the message names the service and its log file."""


def _stat(pid: int | str) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name, or None for a gone or zombie process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Field 2 (comm) may contain spaces and parentheses: split after its closing paren.
    rest = stat.rsplit(")", 1)[1].split()
    return None if rest[0] == "Z" else rest  # a zombie has exited; only a wait() is pending


def proc_start_time(pid: int) -> int | None:
    """Kernel start time of ``pid`` in clock ticks since boot, or None if it is not running."""
    rest = _stat(pid)
    return int(rest[19]) if rest else None


def children(pid: int) -> list[int]:
    """Live direct children of ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            rest = _stat(entry.name)
            if rest and int(rest[1]) == pid:
                found.append(int(entry.name))
    return found


def group_members(pgid: int) -> list[int]:
    """Live processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            rest = _stat(entry.name)
            if rest and int(rest[2]) == pgid:
                members.append(int(entry.name))
    return members


@dataclass(frozen=True)
class PidRecord:
    pid: int
    start_time: int

    def alive(self) -> bool:
        return proc_start_time(self.pid) == self.start_time


class PidFile:
    def __init__(self, path: Path):
        self.path = path

    def read(self) -> PidRecord | None:
        try:
            data = json.loads(self.path.read_text())
            return PidRecord(int(data["pid"]), int(data["start_time"]))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def write(self, pid: int) -> PidRecord:
        start = proc_start_time(pid)
        if start is None:
            raise StackError(f"process {pid} exited before it could be recorded")
        record = PidRecord(pid, start)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": pid, "start_time": start}))
        tmp.replace(self.path)
        return record

    def running(self) -> PidRecord | None:
        record = self.read()
        return record if record and record.alive() else None

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def spawn(
    cmd: Sequence[str],
    log_path: Path,
    user: str | None = None,
    group: str | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start ``cmd`` detached in its own session, stdout/stderr appended to ``log_path``.

    ``user``/``group`` drop privileges in the child (PostgreSQL will not run as root); ``env``
    replaces the environment.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            user=user,
            group=group,
            extra_groups=[] if user else None,
        )
    return proc.pid


def terminate(record: PidRecord, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
    """Signal the process group led by ``record``; SIGKILL it if it outlives ``timeout``.

    Returns once no process of the group is left, not just its leader.
    """
    if not record.alive():
        return
    for signum, wait in ((sig, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(record.pid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            _reap(record.pid)
            if not group_members(record.pid):
                return
            time.sleep(0.2)
    raise StackError(f"process {record.pid} did not exit after SIGKILL")


def _reap(pid: int) -> None:
    # Processes spawned by this very Python process (tests) become zombies until waited for.
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


def wait_until(
    check: Callable[[], bool],
    *,
    service: str,
    log_path: Path,
    timeout: float,
    alive: Callable[[], bool] = lambda: True,
) -> float:
    """Poll ``check`` until it is true; fail fast if the process died. Returns seconds waited."""
    start = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - start
        except Exception:  # noqa: BLE001 - a readiness probe fails in many ways while a server boots
            pass
        if not alive():
            raise StackError(f"{service} exited during start-up; see its log {log_path}:\n{tail(log_path)}")
        if time.monotonic() - start > timeout:
            raise StackError(f"{service} was not ready after {timeout:.0f}s; see its log {log_path}:\n{tail(log_path)}")
        time.sleep(0.25)
