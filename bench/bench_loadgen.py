"""How many requests/s one core generates: the loadtest engine vs Locust vs httpx.

Usage: python -m bench.bench_loadgen [--duration 10] [--users 32] [--repeat 3]

A fixed-response HTTP/1.1 server (uvloop + httptools, answering a small JSON body)
runs pinned to CPU 1; each generator runs in its own process pinned to CPU 0 and
POSTs an iris-sized JSON body over keep-alive connections on 127.0.0.1 for the
duration, after a one-second warm-up. Besides requests/s of wall time it prints
requests per CPU-second of the generator process, which is what one core can generate
whatever else the machine runs, and the server's CPU use: near 100 %, the server and
not the generator was the limit. Loopback only; every run is bounded by --duration.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BODY = b'{"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}'
RESPONSE = b'{"prediction": {"species": "setosa"}, "policies": []}'
PATH = "/api/models/iris/prediction"
GENERATOR_CPU, SERVER_CPU = 0, 1
Run = tuple[int, float, float]  # requests, wall seconds, generator CPU seconds


def serve(port: int) -> None:
    """A minimal keep-alive server: every complete request gets the same 200 JSON reply."""
    import httptools
    import uvloop

    reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
        len(RESPONSE),
        RESPONSE,
    )

    class Handler(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            self.parser.feed_data(data)

        def on_message_complete(self) -> None:
            self.transport.write(reply)  # type: ignore[attr-defined]

    async def listen() -> None:
        server = await asyncio.get_running_loop().create_server(Handler, "127.0.0.1", port, backlog=1024)
        print("ready", flush=True)
        await server.serve_forever()

    uvloop.run(listen())


def run_engine(url: str, users: int, duration: float) -> Run:
    import uvloop

    from modeldeploy.loadtest.engine import Endpoint, Load, LoadGenerator
    from modeldeploy.loadtest.stats import Recorder

    async def load() -> Run:
        endpoint = [Endpoint.parse(url)]
        await LoadGenerator(endpoint, PATH, [BODY], Load(1.0, users=users), Recorder()).run()
        recorder = Recorder()
        cpu = time.process_time()
        elapsed = await LoadGenerator(endpoint, PATH, [BODY], Load(duration, users=users), recorder).run()
        cpu = time.process_time() - cpu
        assert not recorder.errors, recorder.errors
        return sum(b.requests for b in recorder.buckets.values()), elapsed, cpu

    return uvloop.run(load())


def run_locust(url: str, users: int, duration: float) -> Run:
    import gevent
    from locust import FastHttpUser, constant, task
    from locust.env import Environment

    class Client(FastHttpUser):
        host = url
        wait_time = constant(0)

        @task
        def predict(self) -> None:
            self.client.post(PATH, data=BODY, headers={"Content-Type": "application/json"})

    env = Environment(user_classes=[Client])
    runner = env.create_local_runner()
    runner.start(users, spawn_rate=users)
    gevent.sleep(1.0)
    env.stats.reset_all()
    began, cpu = time.perf_counter(), time.process_time()
    gevent.sleep(duration)
    done, failed = env.stats.total.num_requests, env.stats.total.num_failures
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    runner.quit()
    assert failed == 0, failed
    return done, elapsed, cpu


def run_httpx(url: str, users: int, duration: float) -> Run:
    import httpx
    import uvloop

    async def load() -> Run:
        limits = httpx.Limits(max_connections=users, max_keepalive_connections=users)
        async with httpx.AsyncClient(base_url=url, limits=limits) as client:
            count, stop = 0, 0.0

            async def user() -> None:
                nonlocal count
                while time.perf_counter() < stop:
                    response = await client.post(PATH, content=BODY, headers={"Content-Type": "application/json"})
                    response.raise_for_status()
                    count += 1

            for warm_up in (True, False):
                count = 0
                began, cpu = time.perf_counter(), time.process_time()
                stop = began + (1.0 if warm_up else duration)
                await asyncio.gather(*(user() for _ in range(users)))
            return count, time.perf_counter() - began, time.process_time() - cpu

    return uvloop.run(load())


GENERATORS = {"engine": run_engine, "locust": run_locust, "httpx": run_httpx}


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(name: str, url: str, users: int, duration: float, server_pid: int) -> dict[str, float]:
    """One run of one generator in a child pinned to the generator CPU."""
    cpu_before, began = cpu_seconds(server_pid), time.perf_counter()
    out = subprocess.run(
        [
            "taskset",
            "-c",
            str(GENERATOR_CPU),
            sys.executable,
            __file__,
            "--role",
            name,
            "--url",
            url,
            "--users",
            str(users),
            "--duration",
            str(duration),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=duration + 60,
    ).stdout
    server_cpu = (cpu_seconds(server_pid) - cpu_before) / (time.perf_counter() - began) * 100
    requests, elapsed, cpu = json.loads(out.strip().splitlines()[-1])
    return {
        "rps": requests / elapsed,
        "per_cpu_s": requests / cpu,
        "cpu": cpu / elapsed * 100,
        "server_cpu": server_cpu,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--generators", default=",".join(GENERATORS))
    parser.add_argument("--role", choices=["server", *GENERATORS])
    parser.add_argument("--url")
    parser.add_argument("--port", type=int)
    args = parser.parse_args()

    if args.role == "server":
        serve(args.port)
        return
    if args.role:
        print(json.dumps(GENERATORS[args.role](args.url, args.users, args.duration)))
        return

    # Only this parent needs the harness: the server and generator children run this file as a script.
    from devcluster.ports import free_port

    port = free_port()
    server = subprocess.Popen(
        ["taskset", "-c", str(SERVER_CPU), sys.executable, __file__, "--role", "server", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        url = f"http://127.0.0.1:{port}"
        print(f"{args.users} users, {args.duration:g} s, medians of {args.repeat} runs")
        print(
            f"{'generator':<10}{'req/s':>10}{'req per CPU-s (runs)':>36}{'median':>10}{'gen CPU':>9}{'server CPU':>11}"
        )
        for name in args.generators.split(","):
            runs = [measure(name, url, args.users, args.duration, server.pid) for _ in range(args.repeat)]
            shown = ", ".join(f"{r['per_cpu_s']:,.0f}" for r in runs)
            print(
                f"{name:<10}{statistics.median(r['rps'] for r in runs):>10,.0f}{shown:>36}"
                f"{statistics.median(r['per_cpu_s'] for r in runs):>10,.0f}"
                f"{statistics.median(r['cpu'] for r in runs):>8.0f}%{max(r['server_cpu'] for r in runs):>10.0f}%"
            )
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
