"""`Supervisor`: the parent of `modeldeploy serve --workers N`: forks the workers, restarts, forwards signals.

Everything expensive (verifying and loading the model, binding the socket) happens before
`run()`, so each worker inherits it copy-on-write. A worker that dies while the server
runs is forked again in its place (the same index), at most `RestartBudget.limit` times a
`window`; past that the supervisor stops the others and exits 1, so the kubelet restarts
the container. SIGTERM and SIGINT are forwarded to every worker (each drains as one server
alone would) and no worker is restarted after; `run()` returns 0 once every worker has
exited 0. The children never return from `fork()` into the caller: they `os._exit`.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

logger = logging.getLogger(__name__)

FORWARDED = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG = 1


@dataclass
class RestartBudget:
    """At most `limit` restarts within any `window` seconds."""

    limit: int = 5
    window: float = 60.0
    times: collections.deque[float] = field(default_factory=collections.deque)

    def allow(self, now: float) -> bool:
        """Whether a restart at `now` (monotonic) fits the budget; counts it if so."""
        while self.times and now - self.times[0] >= self.window:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True


class Supervisor:
    """Runs `work(index)` in `count` forked processes until they are told to stop."""

    def __init__(
        self,
        work: Callable[[int], int],
        count: int,
        on_stop: Callable[[], None] = lambda: None,
        on_exit: Callable[[int], None] = lambda pid: None,
        budget: RestartBudget | None = None,
    ) -> None:
        self.work = work
        self.count = count
        self.on_stop = on_stop  # first signal: e.g. close the parent's copy of the listening socket
        self.on_exit = on_exit  # a worker's pid, once it has exited (e.g. forget its live metrics)
        self.budget = budget or RestartBudget()
        self.workers: dict[int, int] = {}  # pid -> index
        self.stopping = False
        self.failed = False
        self.pid = os.getpid()

    def run(self) -> int:
        """Fork the workers and supervise them; the exit code of the whole server."""
        previous = {sig: signal.signal(sig, self._forward) for sig in FORWARDED}
        try:
            for index in range(self.count):
                self._spawn(index)
            while self.workers:
                pid, status = os.wait()  # retried after a signal handler (PEP 475)
                self._reap(pid, os.waitstatus_to_exitcode(status))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 1 if self.failed else 0

    def _reap(self, pid: int, code: int) -> None:
        index = self.workers.pop(pid, None)
        if index is None:
            return
        self.on_exit(pid)
        if self.stopping:
            self.failed |= code != 0
            logger.info("worker exited", extra={"worker": index, "pid": pid, "exitCode": code})
            return
        if not self.budget.allow(time.monotonic()):
            logger.error("worker exited too often: stopping the server",
                         extra={"worker": index, "pid": pid, "exitCode": code,
                                "restarts": self.budget.limit, "windowSeconds": self.budget.window})
            self.failed = True
            self._stop(signal.SIGTERM)
            return
        logger.warning("worker exited: starting another", extra={"worker": index, "pid": pid, "exitCode": code})
        self._spawn(index)

    def _forward(self, sig: int, frame: FrameType | None) -> None:
        logger.info("signal: forwarding it to the workers", extra={"signal": signal.Signals(sig).name})
        self._stop(sig)

    def _stop(self, sig: int) -> None:
        if not self.stopping:
            self.stopping = True
            self.on_stop()
        for pid in self.workers:
            os.kill(pid, sig)

    def _spawn(self, index: int) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)  # a signal now must find the new pid recorded
        try:
            pid = os.fork()
            if pid == 0:
                self._child(index)
            self.workers[pid] = index
            logger.info("worker started", extra={"worker": index, "pid": pid})
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)

    def _child(self, index: int) -> None:
        """In the forked worker: run `work` and exit with its code, whatever happens."""
        code = 1
        try:
            for sig in FORWARDED:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
            _stop_with_parent(self.pid)
            code = self.work(index)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:
            logger.exception("worker failed", extra={"worker": index})
        finally:
            logging.shutdown()
            sys.stderr.flush()
            os._exit(code)


def _stop_with_parent(parent: int) -> None:
    """Linux: SIGTERM this process when the supervisor (`parent`) dies (no orphaned worker keeps the port)."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before prctl
        os.kill(os.getpid(), signal.SIGTERM)
