"""The load generator: HTTP/1.1 keep-alive connections driven by callbacks on one event loop.

Why not Locust: `bench/bench_loadgen.py` runs each generator pinned to one core against
the same fixed-response uvloop server pinned to the other, 32 keep-alive users POSTing an
iris-sized body. Counted in requests per CPU-second of the generator process (robust to the
other work on this shared 2-core machine; medians of 3 runs in each of two bench runs), this engine
made 43,000-46,000, Locust 2.47's FastHttpUser (headless, as a library) 3,200-3,350 and an
httpx AsyncClient 140-210. Each request the generator costs is CPU that the model server on
the same two cores then lacks, so the lean engine wins, by 13x over Locust.

How: each connection is an `asyncio.Protocol` whose response parser (httptools, the
parser uvicorn uses) calls back when a response is complete; the next request goes out
from that callback, with no task or future per request. Request bytes are built once.
Two load models:
- closed (`users`): N connections, each sends its next request as soon as the last
  one is answered; latency is measured from the send.
- open (`rate`): requests are due at fixed times (rising linearly during the ramp);
  each goes out on an idle connection, opening more up to `max_connections`, else it
  waits in a backlog. Latency is measured from when the request was due, so a server
  that falls behind is not hidden by the generator waiting (no coordinated omission).

Several generators can share one loop (`run_together`): the canary analysis loads the
target's and the baseline's endpoints with the same load at the same time.

Owns sockets and timing only: what to send comes from `inputs`, what the results mean
from `stats`. No terminal or file output here.
"""

from __future__ import annotations

import asyncio
import math
import re
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import cast
from urllib.parse import urlsplit

import httptools

from modeldeploy.loadtest.stats import Recorder

WATCHDOG_INTERVAL_S = 0.1
RECONNECT_DELAY_S = 0.05
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # an HTTP header name (RFC 9110)


@dataclass(frozen=True)
class Endpoint:
    """One server to send requests to."""

    host: str
    port: int
    tls: bool = False
    base_path: str = ""

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """`http(s)://host[:port][/base]` -> Endpoint.

        Raises:
            ValueError: not an http(s) URL with a host.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        tls = parts.scheme == "https"
        return cls(parts.hostname, parts.port or (443 if tls else 80), tls, parts.path.rstrip("/"))

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{self.base_path}"


@dataclass(frozen=True)
class Load:
    """How much load, for how long: `users` (closed model) or `rate` (open model)."""

    duration_s: float
    users: int | None = None
    rate: float | None = None
    ramp_s: float = 0.0
    timeout_s: float = 10.0
    max_connections: int = 512

    def __post_init__(self) -> None:
        if (self.users is None) == (self.rate is None):
            raise ValueError("give exactly one of users or rate")
        if (self.users is not None and self.users < 1) or (self.rate is not None and self.rate <= 0):
            raise ValueError("users and rate must be positive")
        if self.duration_s <= 0 or self.ramp_s < 0 or self.timeout_s <= 0:
            raise ValueError("duration and timeout must be positive, ramp not negative")


def build_request(
    endpoint: Endpoint, method: str, path: str, body: bytes | None, headers: Sequence[tuple[str, str]] = ()
) -> bytes:
    """The bytes of one HTTP/1.1 keep-alive request, with `headers` (checked by `parse_header`).

    A body is sent as JSON unless `headers` give a Content-Type.
    """
    lines = [f"{method} {endpoint.base_path}{path} HTTP/1.1", f"Host: {endpoint.host}:{endpoint.port}"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body is not None:
        if not any(name.lower() == "content-type" for name, _ in headers):
            lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(body)}")
    head = "\r\n".join(lines) + "\r\n\r\n"
    return head.encode("ascii") + (body or b"")


def parse_header(text: str) -> tuple[str, str]:
    """`Name: value` -> (name, value), for a request header given on the command line.

    Raises:
        ValueError: no colon, a name that is not an HTTP token, a value that is not printable ASCII,
            or a header that frames the request (Host, Content-Length, Transfer-Encoding).
    """
    name, colon, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not _TOKEN.fullmatch(name):
        raise ValueError(f"not a header: {text!r} (give Name: value)")
    if not all(" " <= c <= "~" or c == "\t" for c in value):
        raise ValueError(f"header {name}: the value must be printable ASCII")
    if name.lower() in ("host", "content-length", "transfer-encoding"):
        raise ValueError(f"header {name} is set by the load generator")
    return name, value


def due_count(elapsed: float, rate: float, ramp_s: float) -> int:
    """How many requests an open-model test has due `elapsed` seconds in.

    The rate rises linearly from 0 to `rate` over `ramp_s`, then stays.
    """
    if elapsed < ramp_s:
        return math.floor(rate * elapsed * elapsed / (2 * ramp_s))
    return math.floor(rate * ramp_s / 2 + rate * (elapsed - ramp_s))


def due_time(index: int, rate: float, ramp_s: float) -> float:
    """When request number `index` (0-based) of an open-model test is due; inverse of `due_count`."""
    k = index + 1
    if k < rate * ramp_s / 2:
        return math.sqrt(2 * ramp_s * k / rate)
    return ramp_s + (k - rate * ramp_s / 2) / rate


class _Connection(asyncio.Protocol):
    """One keep-alive connection; reports each complete response to its generator."""

    def __init__(self, generator: LoadGenerator, endpoint: int) -> None:
        self.generator = generator
        self.endpoint = endpoint
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.started: float | None = None  # when the in-flight request started; None when idle
        self.status = 0
        self.keep_alive = True
        self.error_body = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as err:
            self.generator.failed(self, "InvalidResponse", str(err))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self.status >= 400 and len(self.error_body) < 300:
            self.error_body += body

    def on_message_complete(self) -> None:
        self.generator.completed(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.generator.lost(self, exc)

    def send(self, request: bytes, started: float) -> None:
        assert self.transport is not None
        self.started = started
        self.status = 0
        self.transport.write(request)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class LoadGenerator:
    """Runs one load test against one or more endpoints, writing samples to a recorder.

    Args:
        endpoints: servers to load; connections are spread over them round-robin.
        path: request path below each endpoint's base path.
        bodies: JSON request bodies, sent in turn (POST); empty means GET without a body.
        load: users or rate, duration, ramp, timeout.
        recorder: where each request's outcome goes.
        headers: extra request headers, e.g. a Content-Type for bodies that are not JSON.
    """

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        path: str,
        bodies: Sequence[bytes],
        load: Load,
        recorder: Recorder,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        if not endpoints:
            raise ValueError("no endpoints to load")
        self.endpoints = list(endpoints)
        method = "POST" if bodies else "GET"
        self.requests = [
            [build_request(e, method, path, b, headers) for b in bodies]
            if bodies
            else [build_request(e, method, path, None, headers)]
            for e in self.endpoints
        ]
        self.load = load
        self.recorder = recorder
        self.t0 = 0.0
        self.stop_at = math.inf
        self._next = 0
        self.opened = 0  # connection attempts so far
        self._connections: set[_Connection] = set()
        self._idle: list[_Connection] = []
        self._backlog: deque[float] = deque()
        self._ssl = ssl.create_default_context() if any(e.tls for e in self.endpoints) else None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def elapsed(self) -> float:
        return perf_counter() - self.t0

    def _at(self, when: float) -> float:
        """Seconds into the test for the timeline; answers after the end count in its last second."""
        return min(when, self.stop_at - 1e-6) - self.t0

    @property
    def in_flight(self) -> int:
        return sum(1 for c in self._connections if c.started is not None)

    @property
    def running(self) -> bool:
        return perf_counter() < self.stop_at

    def stop(self) -> None:
        """End the test early (e.g. on Ctrl-C); in-flight requests still finish."""
        self.stop_at = min(self.stop_at, perf_counter())

    async def run(self) -> float:
        """Generate the load, wait for in-flight requests, close; returns the test's duration."""
        self.t0 = perf_counter()
        self.stop_at = self.t0 + self.load.duration_s
        watchdog = asyncio.create_task(self._watchdog())
        if self.load.users is not None:
            loop = asyncio.get_running_loop()
            for user in range(self.load.users):
                loop.call_later(self.load.ramp_s * user / self.load.users, self._spawn_connection)
            await self._sleep_until_stopped()
        else:
            await self._dispatch(self.load.rate or 0.0)
        duration = min(perf_counter(), self.stop_at) - self.t0
        await self._drain()
        watchdog.cancel()
        for task in list(self._tasks):
            task.cancel()
        return duration

    async def _sleep_until_stopped(self) -> None:
        while self.running:
            await asyncio.sleep(min(0.1, max(0.0, self.stop_at - perf_counter())))

    async def _dispatch(self, rate: float) -> None:
        sent = 0
        while True:
            due = due_count(min(perf_counter(), self.stop_at) - self.t0, rate, self.load.ramp_s)
            while sent < due:
                self._submit(self.t0 + due_time(sent, rate, self.load.ramp_s))
                sent += 1
            if not self.running:
                return
            next_due = self.t0 + due_time(sent, rate, self.load.ramp_s)
            await asyncio.sleep(max(0.001, min(next_due, self.stop_at) - perf_counter()))

    async def _drain(self) -> None:
        deadline = perf_counter() + self.load.timeout_s
        while (self._backlog or self.in_flight) and perf_counter() < deadline:
            await asyncio.sleep(0.01)
        for started in self._backlog:
            self.recorder.error(self._at(started), "NotSent", "the target did not keep up with the rate")
        self._backlog.clear()
        for conn in list(self._connections):
            if conn.started is not None:
                self.failed(conn, "Timeout", f"no response within {self.load.timeout_s:g}s")
            conn.close()

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_INTERVAL_S)
            limit = perf_counter() - self.load.timeout_s
            for conn in list(self._connections):
                if conn.started is not None and conn.started < limit:
                    self.failed(conn, "Timeout", f"no response within {self.load.timeout_s:g}s")

    def _spawn_connection(self, delay: float = 0.0) -> None:
        task = asyncio.get_running_loop().create_task(self._connect(delay))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        if not self.running:
            return
        index = self.opened % len(self.endpoints)
        endpoint = self.endpoints[index]
        self.opened += 1
        began = perf_counter()
        try:
            _, conn = await asyncio.get_running_loop().create_connection(
                lambda: _Connection(self, index),
                endpoint.host,
                endpoint.port,
                ssl=self._ssl if endpoint.tls else None,
            )
        except OSError as err:
            if self.load.users is not None or self._backlog:
                if self._backlog:  # open model: the oldest waiting request fails with the connection
                    self._backlog.popleft()
                self.recorder.error(self._at(began), type(err).__name__, f"{endpoint.url}: {err}")
            self._replace_connection(RECONNECT_DELAY_S)
            return
        self._connections.add(conn)
        self._ready(conn)

    def _replace_connection(self, delay: float) -> None:
        """A connection is gone: a closed-model user opens another; the open model opens on demand."""
        if self.load.users is not None:
            if self.running:
                self._spawn_connection(delay)
        elif self._backlog:
            self._spawn_connection(delay)

    def _ready(self, conn: _Connection) -> None:
        """`conn` can take a request: send the next one, or park it."""
        if self.load.users is not None:
            if self.running:
                conn.send(self._request(conn), perf_counter())
            else:
                conn.close()
        elif self._backlog:
            conn.send(self._request(conn), self._backlog.popleft())
        else:
            self._idle.append(conn)

    def _request(self, conn: _Connection) -> bytes:
        requests = self.requests[conn.endpoint]
        self._next += 1
        return requests[self._next % len(requests)]

    def _submit(self, due: float) -> None:
        while self._idle:
            conn = self._idle.pop()
            if conn.transport is not None:
                conn.send(self._request(conn), due)
                return
        self._backlog.append(due)
        if len(self._connections) + len(self._tasks) < self.load.max_connections:
            self._spawn_connection()

    def completed(self, conn: _Connection) -> None:
        """Called by a connection when a whole response has arrived."""
        if conn.started is None:  # an answer after we gave up on the request
            return
        now = perf_counter()
        self.recorder.response(self._at(now), now - conn.started, conn.status, bytes(conn.error_body))
        conn.started = None
        conn.error_body.clear()
        if conn.keep_alive:
            self._ready(conn)
        else:
            conn.close()

    def failed(self, conn: _Connection, kind: str, message: str) -> None:
        """Record the in-flight request of `conn` as failed and drop the connection."""
        if conn.started is not None:
            self.recorder.error(self._at(perf_counter()), kind, message)
            conn.started = None
        if conn.transport is not None:
            conn.transport.abort()

    def lost(self, conn: _Connection, exc: Exception | None) -> None:
        """Called by a connection when its socket closed."""
        if conn.started is not None:
            kind = type(exc).__name__ if exc else "ConnectionClosed"
            self.recorder.error(self._at(perf_counter()), kind, str(exc or "the server closed the connection"))
            conn.started = None
        self._connections.discard(conn)
        self._replace_connection(RECONNECT_DELAY_S if exc else 0.0)


async def run_together(generators: Sequence[LoadGenerator]) -> list[float]:
    """Run load tests at the same time on the running event loop; their durations, in order."""
    return list(await asyncio.gather(*(generator.run() for generator in generators)))
