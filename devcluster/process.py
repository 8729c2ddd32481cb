"""Start, probe and stop the processes of a ``ProcessSpec``.

Every process runs in its own session (so it outlives ``modeldeploy cluster up`` and gets
no terminal signals) with its output in its log file. A process is identified by pid *and*
start time, so a recycled pid is never signalled.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devcluster.components import ProcessSpec

STOP_TIMEOUT = 10.0
POLL = 0.1


class ComponentError(RuntimeError):
    """A component did not come up; says which, why, and where its log is."""

    def __init__(self, name: str, reason: str, log: Path) -> None:
        self.component, self.reason, self.log = name, reason, log
        super().__init__(f"{name} {reason}; log: {log}\n{tail(log)}")


@dataclass(frozen=True)
class Handle:
    """A started process as recorded in the state file."""

    name: str
    pid: int
    start_time: int
    log: Path
    health_url: str
    health_ca: Path | None = None


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a log, indented, for error messages."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return "  (no log)"
    return "\n".join(f"  | {line}" for line in text)


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks, or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def alive(handle: Handle) -> bool:
    return _start_time(handle.pid) == handle.start_time


def start(spec: ProcessSpec) -> Handle:
    """Launch ``spec`` detached, appending to its log."""
    spec.log.parent.mkdir(parents=True, exist_ok=True)
    with spec.log.open("ab") as log:
        proc = subprocess.Popen(
            spec.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    started = _start_time(proc.pid)
    return Handle(spec.name, proc.pid, started if started is not None else -1, spec.log,
                  spec.health_url, spec.health_ca)


def _ssl_context(ca: Path | None) -> ssl.SSLContext:
    if ca is not None:
        return ssl.create_default_context(cafile=str(ca))
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the component's own self-signed loopback cert
    return context


def healthy(handle: Handle, timeout: float = 2.0) -> bool:
    """True when the process runs and its health endpoint answers 200."""
    if not alive(handle):
        return False
    context = _ssl_context(handle.health_ca) if handle.health_url.startswith("https") else None
    try:
        with urllib.request.urlopen(handle.health_url, timeout=timeout, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_healthy(handles: list[Handle], timeout: float) -> None:
    """Block until every handle is healthy; raise ``ComponentError`` naming the first failure."""
    deadline = time.monotonic() + timeout
    pending = list(handles)
    while pending:
        for handle in list(pending):
            if healthy(handle):
                pending.remove(handle)
            elif not alive(handle):
                _reap(handle.pid)
                raise ComponentError(handle.name, "exited before it was ready", handle.log)
        if pending and time.monotonic() > deadline:
            first = pending[0]
            raise ComponentError(first.name, f"not ready after {timeout:.0f}s ({first.health_url})", first.log)
        if pending:
            time.sleep(POLL)


def _reap(pid: int) -> None:
    """Collect the exit status if the process is our child (no-op otherwise)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def stop(handle: Handle, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the process, SIGKILL it after ``timeout``; wait until it is gone."""
    for sig, grace in ((signal.SIGTERM, timeout), (signal.SIGKILL, timeout)):
        if not alive(handle):
            break
        os.kill(handle.pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            _reap(handle.pid)
            if not alive(handle):
                break
            time.sleep(POLL)
    _reap(handle.pid)
    if alive(handle):
        raise ComponentError(handle.name, f"pid {handle.pid} survived SIGKILL", handle.log)
