"""Child processes that serve HTTP on loopback (a model server, MinIO, the local operator).

The harness, the tests and the benchmarks start their own ``Popen``; these wait until it answers and stop it.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from devcluster.process import tail


def wait_answering(url: str, child: subprocess.Popen[Any], log: Path, timeout: float = 60.0,
                   interval: float = 0.2, name: str = "the child process") -> None:
    """Poll ``url`` until it answers 200; if ``child`` exits or time runs out, raise with ``log``'s tail."""
    deadline = time.monotonic() + timeout
    while True:
        if child.poll() is not None:
            raise RuntimeError(f"{name} exited with {child.returncode}:\n{tail(log)}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not answer {url} with 200 within {timeout:.0f}s:\n{tail(log)}")
        time.sleep(interval)


def stop_child(child: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    """Send ``sig`` (if it still runs), SIGKILL after ``timeout``; return its exit code."""
    if child.poll() is None:
        child.send_signal(sig)
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return child.returncode
