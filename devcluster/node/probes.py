"""Container probes (httpGet, tcpSocket, exec) and the prober loop that counts thresholds.

httpGet and tcpSocket connect to the pod IP from the node (the bridge routes it), exec runs
the command inside the container's namespaces (``nsenter -t PID -m -n``) with its environment.
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Check = Callable[[], bool]


def port_number(port: int | str, container: Mapping[str, Any]) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for entry in container.get("ports") or []:
        if entry.get("name") == port:
            return int(entry["containerPort"])
    raise ValueError(f"no container port named {port!r}")


def http_get(host: str, spec: Mapping[str, Any], port: int, timeout: float) -> bool:
    """200 <= status < 400 within ``timeout``."""
    cls = http.client.HTTPSConnection if spec.get("scheme") == "HTTPS" else http.client.HTTPConnection
    conn = cls(spec.get("host") or host, port, timeout=timeout)
    headers = {h["name"]: h["value"] for h in spec.get("httpHeaders") or []}
    headers.setdefault("User-Agent", "kube-probe/1.34")
    try:
        conn.request("GET", spec.get("path") or "/", headers=headers)
        return 200 <= conn.getresponse().status < 400
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def tcp_socket(host: str, spec: Mapping[str, Any], port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((spec.get("host") or host, port), timeout=timeout):
            return True
    except OSError:
        return False


def exec_in(pid: int, command: list[str], env: Mapping[str, str], timeout: float) -> bool:
    try:
        proc = subprocess.run(["nsenter", "-t", str(pid), "-m", "-n", "--", *command], env=dict(env),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def make_check(probe: Mapping[str, Any], container: Mapping[str, Any], pod_ip: str, pid: int,
               env: Mapping[str, str]) -> Check:
    """A zero-argument check for ``probe`` against one running container."""
    timeout = float(probe.get("timeoutSeconds", 1))
    if spec := probe.get("httpGet"):
        port = port_number(spec["port"], container)
        return lambda: http_get(pod_ip, spec, port, timeout)
    if spec := probe.get("tcpSocket"):
        port = port_number(spec["port"], container)
        return lambda: tcp_socket(pod_ip, spec, port, timeout)
    if spec := probe.get("exec"):
        return lambda: exec_in(pid, list(spec["command"]), env, timeout)
    raise ValueError(f"unsupported probe handler {sorted(probe)}")


@dataclass
class Thresholds:
    """Success/failure counting of one probe; ``result`` changes only at a threshold.

    ``result`` starts as the kubelet's initial value: unknown (None) for startup, False for
    readiness, True for liveness.
    """

    success: int
    failure: int
    result: bool | None
    _ok: int = 0
    _bad: int = 0

    def record(self, ok: bool) -> bool | None:
        """Count one result; return the (possibly new) result."""
        self._ok, self._bad = (self._ok + 1, 0) if ok else (0, self._bad + 1)
        if ok and self._ok >= self.success:
            self.result = True
        elif not ok and self._bad >= self.failure:
            self.result = False
        return self.result


class Prober(threading.Thread):
    """Runs one probe every ``periodSeconds`` after ``initialDelaySeconds`` while ``gate()`` holds.

    ``on_result(result)`` is called after each probe with the threshold-filtered result.
    """

    def __init__(self, probe: Mapping[str, Any], check: Check, initial: bool | None, gate: Callable[[], bool],
                 on_result: Callable[[bool | None], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.probe, self.check, self.gate, self.on_result = probe, check, gate, on_result
        self.thresholds = Thresholds(int(probe.get("successThreshold", 1)), int(probe.get("failureThreshold", 3)),
                                     initial)
        self.stopped = threading.Event()

    def run(self) -> None:
        if self.stopped.wait(float(probe_delay(self.probe))):
            return
        period = float(self.probe.get("periodSeconds", 10))
        while not self.stopped.is_set():
            if self.gate():
                result = self.thresholds.record(self.check())
                if not self.stopped.is_set():
                    self.on_result(result)
                self.stopped.wait(period)
            else:
                self.stopped.wait(0.2)

    def stop(self) -> None:
        self.stopped.set()


def probe_delay(probe: Mapping[str, Any]) -> int:
    return int(probe.get("initialDelaySeconds", 0))
