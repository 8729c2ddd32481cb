"""A small bounded HTTP/1.1 load generator shared by the server benchmarks.

N keep-alive connections each send one request at a time (closed loop) for a fixed time
(and at most `max_requests` in all); latencies after the warm-up are recorded. Raw
asyncio streams keep the generator's own cost per request small, so the server under
test, not the client, is the bottleneck. Run as a module so it gets its own process:

    python -m bench.httpload URL BODY_FILE --concurrency 16 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


def summarise(latencies: list[float], errors: int, seconds: float) -> LoadResult:
    ordered = sorted(latencies)
    ms = [v * 1000 for v in (percentile(ordered, 0.5), percentile(ordered, 0.9), percentile(ordered, 0.99))]
    return LoadResult(
        requests=len(ordered),
        errors=errors,
        seconds=round(seconds, 3),
        rps=round(len(ordered) / seconds, 1) if seconds else 0.0,
        p50_ms=round(ms[0], 3),
        p90_ms=round(ms[1], 3),
        p99_ms=round(ms[2], 3),
        max_ms=round(ordered[-1] * 1000, 3) if ordered else float("nan"),
    )


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one response (Content-Length framed); returns its status code."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def run_load(
    url: str, body: bytes, concurrency: int, duration: float, warmup: float = 1.0, max_requests: int = 2_000_000
) -> LoadResult:
    """Closed-loop load on `url` (POST `body` as JSON); bounded by `duration` and `max_requests`."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors = 0
    sent = 0
    began = time.perf_counter()
    measure_from = began + warmup
    stop_at = measure_from + duration

    async def connection() -> None:
        nonlocal errors, sent
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while sent < max_requests:
                start = time.perf_counter()
                if start >= stop_at:
                    return
                sent += 1
                writer.write(request)
                status = await _read_response(reader)
                end = time.perf_counter()
                if start >= measure_from:
                    if status == 200:
                        latencies.append(end - start)
                    else:
                        errors += 1
        finally:
            writer.close()

    outcomes = await asyncio.gather(*(connection() for _ in range(concurrency)), return_exceptions=True)
    errors += sum(1 for o in outcomes if isinstance(o, BaseException))
    return summarise(latencies, errors, min(time.perf_counter(), stop_at) - measure_from)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("body_file", type=Path)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run_load(args.url, args.body_file.read_bytes(), args.concurrency, args.duration, args.warmup))
    print(json.dumps(asdict(result)))


if __name__ == "__main__":
    main()
