"""The load generator: request bytes, the open-model schedule, and runs against real sockets.

Servers here are the real iris model server or tiny asyncio servers on 127.0.0.1 that
misbehave on purpose (never answer, close after each answer). Every run is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from modeldeploy.loadtest.engine import (
    Endpoint,
    Load,
    LoadGenerator,
    build_request,
    due_count,
    due_time,
    parse_header,
)
from modeldeploy.loadtest.stats import Recorder, summarize

IRIS = json.dumps({"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}).encode()
PREDICT = "/api/models/iris/prediction"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:8000", Endpoint("127.0.0.1", 8000)),
        ("https://models.example/base/", Endpoint("models.example", 443, True, "/base")),
        ("http://[::1]:81", Endpoint("::1", 81)),
    ],
)
def test_endpoint_parse(url: str, expected: Endpoint) -> None:
    assert Endpoint.parse(url) == expected


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://host/", "http://"])
def test_endpoint_parse_rejects_non_http(url: str) -> None:
    with pytest.raises(ValueError):
        Endpoint.parse(url)


def test_request_bytes() -> None:
    request = build_request(Endpoint("10.0.0.1", 80, base_path="/m"), "POST", "/p", b'{"a":1}')
    assert request == (
        b'POST /m/p HTTP/1.1\r\nHost: 10.0.0.1:80\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{"a":1}'
    )
    assert build_request(Endpoint("h", 1), "GET", "/x", None) == b"GET /x HTTP/1.1\r\nHost: h:1\r\n\r\n"


def test_given_headers_are_sent_and_a_given_content_type_replaces_json() -> None:
    headers = [("Content-Type", "application/octet-stream"), ("Inference-Header-Content-Length", "2")]
    request = build_request(Endpoint("h", 1), "POST", "/p", b"{}\x00\x01", headers)
    assert request == (
        b"POST /p HTTP/1.1\r\nHost: h:1\r\nContent-Type: application/octet-stream\r\n"
        b"Inference-Header-Content-Length: 2\r\nContent-Length: 4\r\n\r\n{}\x00\x01"
    )


def test_the_generator_sends_its_headers_on_every_request(free_port: Callable[[], int]) -> None:
    port = free_port()
    heads: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError):
            while True:
                heads.append(await reader.readuntil(b"\r\n\r\n"))
                await reader.readexactly(2)  # the body
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    generator = LoadGenerator([Endpoint("127.0.0.1", port)], "/p", [b"{}"], Load(0.3, users=2), Recorder(),
                              [("X-Bench", "1")])
    run(generator, lambda: asyncio.start_server(answer, "127.0.0.1", port))
    assert sum(b.requests for b in generator.recorder.buckets.values()) > 0 and heads
    assert all(b"\r\nX-Bench: 1\r\n" in head for head in heads)


def test_parse_header() -> None:
    assert parse_header(" Inference-Header-Content-Length :  120 ") == ("Inference-Header-Content-Length", "120")


@pytest.mark.parametrize(
    "text",
    [
        "no colon",
        ": value",
        "Bad Name: x",
        "X-A: one\r\nX-Injected: two",
        "X-A: caf\u00e9",
        "Host: evil",
        "content-length: 9",
        "Transfer-Encoding: chunked",
    ],
)
def test_parse_header_rejects_what_would_break_or_smuggle_a_request(text: str) -> None:
    with pytest.raises(ValueError):
        parse_header(text)


@pytest.mark.parametrize("ramp", [0.0, 2.0])
def test_open_model_schedule_is_consistent(ramp: float) -> None:
    rate = 50.0
    times = [due_time(i, rate, ramp) for i in range(400)]
    assert times == sorted(times)
    assert all(due_count(t + 1e-9, rate, ramp) == i + 1 for i, t in enumerate(times))
    assert due_count(5.0, rate, ramp) == int(rate * (5.0 - ramp / 2))
    if ramp:
        assert due_count(ramp / 2, rate, ramp) == int(rate * ramp / 8), (
            "a quarter of the ramp's requests in its first half"
        )


@pytest.mark.parametrize(
    "kwargs", [{}, {"users": 1, "rate": 1.0}, {"users": 0}, {"rate": -1.0}, {"users": 1, "ramp_s": -1.0}]
)
def test_load_needs_exactly_one_positive_model(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        Load(1.0, **kwargs)


def run(generator: LoadGenerator, *servers: Callable[[], Awaitable[asyncio.AbstractServer]]) -> float:
    async def main() -> float:
        started = [await start() for start in servers]
        try:
            return await generator.run()
        finally:
            for server in started:
                server.close()

    return asyncio.run(main())


def test_closed_model_keeps_its_connections_against_the_real_server(iris_url: str) -> None:
    recorder = Recorder()
    generator = LoadGenerator([Endpoint.parse(iris_url)], PREDICT, [IRIS], Load(1.5, users=4), recorder)
    duration = run(generator)
    stats = summarize(recorder, duration)
    assert stats.requests > 20 and stats.failures == 0 and stats.statuses == {"200": stats.requests}
    assert generator.opened == 4, "keep-alive: one connection per user for the whole test"
    assert 1.4 < duration < 1.7


def test_open_model_sends_the_scheduled_count_against_the_real_server(iris_url: str) -> None:
    recorder = Recorder()
    generator = LoadGenerator([Endpoint.parse(iris_url)], PREDICT, [IRIS], Load(2.0, rate=100.0, ramp_s=1.0), recorder)
    stats = summarize(recorder, run(generator))
    assert 140 <= stats.requests <= due_count(2.0, 100.0, 1.0) == 150
    assert stats.failures == 0
    assert stats.timeline[0].requests < stats.timeline[1].requests, "the rate ramps up"


def test_refused_connections_are_failures_not_a_hang(free_port: Callable[[], int]) -> None:
    recorder = Recorder()
    began = time.monotonic()
    run(LoadGenerator([Endpoint("127.0.0.1", free_port())], PREDICT, [IRIS], Load(0.5, users=2), recorder))
    assert time.monotonic() - began < 3
    stats = summarize(recorder, 0.5)
    assert stats.requests == stats.failures > 0
    assert set(stats.errors) == {"ConnectionRefusedError"}


def test_open_model_charges_each_refused_connection_to_one_scheduled_request(free_port: Callable[[], int]) -> None:
    recorder = Recorder()
    run(
        LoadGenerator(
            [Endpoint("127.0.0.1", free_port())], PREDICT, [IRIS], Load(1.0, rate=40.0, timeout_s=0.5), recorder
        )
    )
    stats = summarize(recorder, 1.0)
    assert stats.requests == stats.failures == 40, "no more failures than scheduled requests"
    assert set(stats.errors) <= {"ConnectionRefusedError", "NotSent"}


async def _silent_server(port: int) -> asyncio.AbstractServer:
    """Accepts connections, reads, never answers."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", port)


def test_unanswered_requests_time_out(free_port: Callable[[], int]) -> None:
    port = free_port()
    recorder = Recorder()
    generator = LoadGenerator(
        [Endpoint("127.0.0.1", port)], PREDICT, [IRIS], Load(1.0, users=3, timeout_s=0.3), recorder
    )
    began = time.monotonic()
    run(generator, lambda: _silent_server(port))
    assert time.monotonic() - began < 2.5
    stats = summarize(recorder, 1.0)
    assert stats.errors.keys() == {"Timeout"}
    assert 3 * 3 <= stats.failures <= 3 * 4, "each user times out about every 0.3 s over 1 s, plus the drain"


def test_open_model_counts_requests_it_could_not_send(free_port: Callable[[], int]) -> None:
    port = free_port()
    recorder = Recorder()
    load = Load(1.0, rate=50.0, timeout_s=0.2, max_connections=2)
    run(LoadGenerator([Endpoint("127.0.0.1", port)], PREDICT, [IRIS], load, recorder), lambda: _silent_server(port))
    stats = summarize(recorder, 1.0)
    assert stats.failures == stats.requests == 50
    assert stats.errors["Timeout"] > 0 and stats.errors["NotSent"] > 0


class Counting:
    """A server that answers 200 and counts requests; with `close`, it closes after each answer."""

    def __init__(self, port: int, close: bool = False) -> None:
        self.port = port
        self.close = close
        self.requests = 0
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            self.requests += 1
            extra = b"Connection: close\r\n" if self.close else b""
            writer.write(b"HTTP/1.1 200 OK\r\n" + extra + b"Content-Length: 2\r\n\r\n{}")
            await writer.drain()
            if self.close:
                break
        writer.close()

    async def start(self, tls: ssl.SSLContext | None = None) -> asyncio.AbstractServer:
        return await asyncio.start_server(self.handle, "127.0.0.1", self.port, ssl=tls)


def test_a_server_that_closes_after_each_answer_gets_new_connections(free_port: Callable[[], int]) -> None:
    server = Counting(free_port(), close=True)
    recorder = Recorder()
    generator = LoadGenerator([Endpoint("127.0.0.1", server.port)], "/p", [b"{}"], Load(0.5, users=2), recorder)
    run(generator, server.start)
    stats = summarize(recorder, 0.5)
    assert stats.failures == 0 and stats.requests == server.requests > 10
    assert server.connections >= server.requests and generator.opened >= server.requests, "one connection per request"


def test_connections_spread_over_all_endpoints(free_port: Callable[[], int]) -> None:
    servers = [Counting(free_port()), Counting(free_port())]
    recorder = Recorder()
    endpoints = [Endpoint("127.0.0.1", s.port) for s in servers]
    run(LoadGenerator(endpoints, "/p", [b"{}"], Load(0.5, users=4), recorder), *(s.start for s in servers))
    assert [s.connections for s in servers] == [2, 2]
    assert all(s.requests > 0 for s in servers)
    assert sum(s.requests for s in servers) == summarize(recorder, 0.5).requests


def test_bodies_are_sent_in_turn(free_port: Callable[[], int]) -> None:
    bodies = [b'{"i":%d}' % i for i in range(3)]
    seen: Counter[bytes] = Counter()

    async def start() -> asyncio.AbstractServer:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while not reader.at_eof():
                try:
                    await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    break
                seen[await reader.readexactly(7)] += 1
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            writer.close()

        return await asyncio.start_server(handle, "127.0.0.1", port)

    port = free_port()
    run(LoadGenerator([Endpoint("127.0.0.1", port)], "/p", bodies, Load(0.3, users=1), Recorder()), start)
    assert set(seen) == set(bodies)
    assert max(seen.values()) - min(seen.values()) <= 1


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return directory / "cert.pem", directory / "key.pem"


def test_https_endpoints_are_verified_against_the_trusted_certificates(
    free_port: Callable[[], int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)
    server = Counting(free_port())

    endpoint = Endpoint.parse(f"https://127.0.0.1:{server.port}")
    untrusted = Recorder()
    run(LoadGenerator([endpoint], "/p", [b"{}"], Load(0.3, users=1), untrusted), lambda: server.start(server_tls))
    assert summarize(untrusted, 0.3).errors.keys() == {"SSLCertVerificationError"}

    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    trusted = Recorder()
    run(LoadGenerator([endpoint], "/p", [b"{}"], Load(0.3, users=1), trusted), lambda: server.start(server_tls))
    stats = summarize(trusted, 0.3)
    assert stats.failures == 0 and stats.requests > 0
