"""Start, probe and stop the processes of a ``ProcessSpec``.

Every process runs in its own session (so it outlives ``python -m devcluster up`` and gets
no terminal signals) with its output in its log file. A process is identified by pid *and*
start time, so a recycled pid is never signalled.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devcluster.components import Probe, ProcessSpec

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
    health: Probe
    gate: Probe | None = None
    argv: tuple[str, ...] = ()  # how it was started, to start it again

    def spec(self) -> ProcessSpec:
        """What starts this process again (same command line, log and probes)."""
        return ProcessSpec(self.name, self.argv, self.log, self.health, self.gate)


def _probe_from_dict(data: dict[str, Any]) -> Probe:
    return Probe(data["url"], **{k: Path(v) for k, v in data.items() if k != "url" and v is not None})


def handle_from_dict(data: dict[str, Any]) -> Handle:
    """The inverse of ``dataclasses.asdict`` (with paths as strings) for the state file."""
    gate = data.get("gate")
    return Handle(data["name"], data["pid"], data["start_time"], Path(data["log"]),
                  _probe_from_dict(data["health"]), gate and _probe_from_dict(gate), tuple(data.get("argv", ())))


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
    return Handle(spec.name, proc.pid, started if started is not None else -1, spec.log, spec.health, spec.gate,
                  spec.argv)


def _ssl_context(probe: Probe) -> ssl.SSLContext:
    if probe.ca is not None:
        context = ssl.create_default_context(cafile=str(probe.ca))
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the component's own self-signed loopback cert
    if probe.cert is not None:
        context.load_cert_chain(str(probe.cert), str(probe.key) if probe.key else None)
    return context


def answers(probe: Probe, timeout: float = 2.0) -> bool:
    """True when ``probe.url`` answers 200."""
    context = _ssl_context(probe) if probe.url.startswith("https") else None
    try:
        with urllib.request.urlopen(probe.url, timeout=timeout, context=context) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def healthy(handle: Handle) -> bool:
    """True when the process runs and its health endpoint answers 200."""
    return alive(handle) and answers(handle.health)


def listening(url: str) -> bool:
    """True when ``url``'s host and port accept TCP connections."""
    address = urllib.parse.urlsplit(url)
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((address.hostname or "", address.port or 0)) == 0


def gate_open(handle: Handle) -> bool:
    """True when the next start stage may begin: ``gate`` answers, or the health port listens."""
    return alive(handle) and (answers(handle.gate) if handle.gate else listening(handle.health.url))


def wait_gates(handles: list[Handle], timeout: float) -> None:
    """Block until every handle's gate is open (the process may not be ready yet)."""
    _wait(handles, gate_open, "started", timeout)


def wait_healthy(handles: list[Handle], timeout: float) -> None:
    """Block until every handle is healthy; raise ``ComponentError`` naming the first failure."""
    _wait(handles, healthy, "ready", timeout)


def _wait(handles: list[Handle], check: Callable[[Handle], bool], state: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(handles)
    while pending:
        for handle in list(pending):
            if check(handle):
                pending.remove(handle)
            elif not alive(handle):
                _reap(handle.pid)
                raise ComponentError(handle.name, f"exited before it was {state}", handle.log)
        if pending and time.monotonic() > deadline:
            first = pending[0]
            raise ComponentError(first.name, f"not {state} after {timeout:.0f}s ({first.health.url})", first.log)
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
