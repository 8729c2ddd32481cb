"""bench_server's pure parts: request bodies, the load tools' output parsed, best rounds, goals, the report.

No processes, sockets or files: text and numbers in, text and numbers out (tests/bench feeds
it outputs captured from real wrk, ghz and `modeldeploy loadtest` runs).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# protocols
SEED = "REST seed"  # POST /api/models/iris/prediction (ours only)
V1 = "REST v1"  # POST /v1/models/iris:predict (KServe)
V2 = "REST v2 JSON"
BINARY = "REST v2 binary"  # the binary tensor data extension (Inference-Header-Content-Length)
GRPC = "gRPC v2"  # inference.GRPCInferenceService/ModelInfer
PROTOCOLS = (SEED, V1, V2, BINARY, GRPC)
# servers
OURS = "modeldeploy"
POLICIES = "modeldeploy +policies"
MLSERVER = "MLServer"
BATCHING = "MLServer batching"
KSERVE = "KServe"
SERVERS = (OURS, POLICIES, MLSERVER, BATCHING, KSERVE)
PEERS = (MLSERVER, KSERVE)  # the same-protocol peers of the 2x goal (batching has its own goal)
# tools
LOADTEST, WRK, GHZ = "loadtest", "wrk", "ghz"
TOOLS = (LOADTEST, WRK, GHZ)

HEADER_LENGTH = "Inference-Header-Content-Length"
_WRK_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_WRK_NUMBER = r"([\d.]+)([kMG]?)"
_SI = {"": 1.0, "k": 1e3, "M": 1e6, "G": 1e9}


class ToolOutputError(ValueError):
    """A load tool's output lacks what the bench reads from it."""


@dataclass(frozen=True)
class Measurement:
    """What one run of a load tool measured."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


@dataclass(frozen=True)
class Run:
    """One measured run: which target (server, protocol), which tool, at what concurrency, in which round."""

    server: str
    protocol: str
    tool: str
    concurrency: int
    round: int
    measurement: Measurement


@dataclass(frozen=True)
class Goal:
    """One goal line: `ratio` measured against `required` (>=, or < for a cost), and whether it holds."""

    name: str
    concurrency: int
    tool: str
    ratio: float | None  # None: a side was not available
    required: float
    met: bool
    detail: str


def v2_binary_body(input_name: str, rows: Sequence[Sequence[float]]) -> tuple[bytes, dict[str, str]]:
    """A v2 infer request with the binary data extension: the JSON header, then the FP64 rows little-endian.

    Returns the body and the headers that frame it (`Inference-Header-Content-Length`, Content-Type).
    """
    values = [float(v) for row in rows for v in row]
    tensor = struct.pack(f"<{len(values)}d", *values)
    shape = [len(rows), len(rows[0]) if rows else 0]
    header = {
        "inputs": [
            {"name": input_name, "shape": shape, "datatype": "FP64", "parameters": {"binary_data_size": len(tensor)}}
        ]
    }
    head = json.dumps(header, separators=(",", ":")).encode()
    return head + tensor, {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


def grpc_infer_request(model: str, input_name: str, rows: Sequence[Sequence[float]]) -> dict[str, Any]:
    """A ModelInferRequest as protobuf JSON (what ghz sends), the rows as FP64 contents."""
    shape = [len(rows), len(rows[0]) if rows else 0]
    contents = {"fp64_contents": [float(v) for row in rows for v in row]}
    return {"model_name": model, "inputs": [{"name": input_name, "datatype": "FP64", "shape": shape,
                                             "contents": contents}]}


def _wrk_ms(number: str, unit: str) -> float:
    return float(number) * _WRK_UNITS_MS[unit]


def parse_wrk(text: str) -> Measurement:
    """`wrk --latency` output -> its figures; errors are the socket errors plus the non-2xx/3xx answers.

    Raises:
        ToolOutputError: no request count, rate or 50%/99% latency line.
    """
    percentiles = re.findall(r"^\s+(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
    latency = {p: _wrk_ms(n, u) for p, n, u in percentiles}
    total = re.search(rf"^\s+{_WRK_NUMBER} requests in ", text, re.M)
    rate = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    if not (total and rate and {"50", "99"} <= latency.keys()):
        raise ToolOutputError(f"not the output of wrk --latency: {text[:300]!r}")
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = sum(int(n) for n in socket.groups()) if socket else 0
    return Measurement(
        rps=float(rate.group(1)),
        p50_ms=latency["50"],
        p99_ms=latency["99"],
        requests=round(float(total.group(1)) * _SI[total.group(2)]),
        errors=errors + (int(non_2xx.group(1)) if non_2xx else 0),
    )


def parse_ghz(text: str) -> Measurement:
    """ghz's `-O json` report -> its figures; errors are the calls whose status is not OK.

    Raises:
        ToolOutputError: not JSON, or no count, rps or 50/99 latency distribution.
    """
    try:
        report = json.loads(text)
        latency = {round(d["percentage"]): d["latency"] / 1e6 for d in report.get("latencyDistribution") or []}
        count, rps = int(report["count"]), float(report["rps"])
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise ToolOutputError(f"not a ghz JSON report: {err}") from err
    if not {50, 99} <= latency.keys():
        statuses, errors = report.get("statusCodeDistribution"), report.get("errorDistribution")
        raise ToolOutputError(f"ghz measured no latencies (statuses {statuses}, errors {errors})")
    ok = int((report.get("statusCodeDistribution") or {}).get("OK", 0))
    return Measurement(rps, latency[50], latency[99], count, count - ok)


def parse_loadtest(report: Mapping[str, Any]) -> Measurement:
    """`modeldeploy loadtest --report`'s report.json -> its figures."""
    stats = report["stats"]
    latency = stats["latency_ms"]
    return Measurement(float(stats["rps"]), float(latency["p50"]), float(latency["p99"]), int(stats["requests"]),
                       int(stats["failures"]))


Key = tuple[str, str, str, int]  # server, protocol, tool, concurrency


def best_runs(runs: Iterable[Run]) -> dict[Key, Run]:
    """Each (server, protocol, tool, concurrency)'s best round: the most predictions/s without errors first."""
    best: dict[Key, Run] = {}
    for run in runs:
        key = (run.server, run.protocol, run.tool, run.concurrency)
        m, seen = run.measurement, best.get(key)
        if seen is None or (m.errors == 0, m.rps) > (seen.measurement.errors == 0, seen.measurement.rps):
            best[key] = run
    return best


def _margin(ratio: float, required: float, unit: str = "x") -> str:
    if unit == "%":
        over = ratio - required
        return f"{ratio:.1f}% (goal < {required:g}%): " + (
            f"met by {-over:.1f} points" if over < 0 else f"NOT met, over by {over:.1f} points"
        )
    verdict = f"met by +{ratio - required:.2f}x" if ratio >= required else (
        f"NOT met, short by {required - ratio:.2f}x ({(1 - ratio / required) * 100:.0f}%)"
    )
    return f"{ratio:.2f}x (goal >= {required:g}x): {verdict}"


def _versus(
    name: str, ours: Run | None, others: Sequence[Run], required: float, p99_no_worse: bool, concurrency: int, tool: str
) -> Goal:
    """`ours` against the best (most pred/s) of `others`."""
    if ours is None or not others:
        missing = "ours was not" if ours is None else "no peer was"
        return Goal(name, concurrency, tool, None, required, False, f"not available ({missing} measured)")
    peer = max(others, key=lambda r: r.measurement.rps)
    ratio = ours.measurement.rps / peer.measurement.rps if peer.measurement.rps else float("inf")
    p99_ok = not p99_no_worse or ours.measurement.p99_ms <= peer.measurement.p99_ms
    p99 = f"; p99 {ours.measurement.p99_ms:.2f} vs {peer.measurement.p99_ms:.2f} ms" + (
        (" (no worse)" if p99_ok else f" (NOT met: {ours.measurement.p99_ms / peer.measurement.p99_ms:.2f}x worse)")
        if p99_no_worse else ""
    )
    errors = ours.measurement.errors == 0
    detail = f"vs {peer.server} {peer.protocol}: {_margin(ratio, required)}{p99}"
    detail += "" if errors else f"; NOT met: ours had {ours.measurement.errors} errors"
    return Goal(name, concurrency, tool, ratio, required, ratio >= required and p99_ok and errors, detail)


def evaluate_goals(best: Mapping[Key, Run], concurrencies: Sequence[int]) -> list[Goal]:
    """The project's serving goals, measured in this run, per load tool (and per concurrency where they say so).

    - the REST seed path >= 2.5x KServe's best REST (v1, v2 JSON or binary) at c=8, p99 no worse;
    - v2 binary and gRPC >= 2x the better peer (MLServer, KServe) on the same protocol, at every c (c=8 is the goal);
    - at c=64, each protocol >= 1.5x MLServer with adaptive batching on it, p99 no worse;
    - signed policies cost < 10% of the throughput, per protocol and c.
    """
    goals: list[Goal] = []
    tools = sorted({key[2] for key in best}, key=TOOLS.index)

    def get(server: str, protocol: str, tool: str, c: int) -> Run | None:
        return best.get((server, protocol, tool, c))

    for tool in tools:
        if 8 in concurrencies and tool != GHZ:
            kserve = [r for p in (V1, V2, BINARY) if (r := get(KSERVE, p, tool, 8))]
            goals.append(_versus("REST seed >= 2.5x KServe's best REST", get(OURS, SEED, tool, 8), kserve, 2.5,
                                 True, 8, tool))
        for protocol in (BINARY, GRPC):
            if (protocol == GRPC) != (tool == GHZ):
                continue
            for c in concurrencies:
                peers = [r for s in PEERS if (r := get(s, protocol, tool, c))]
                goals.append(_versus(f"{protocol} >= 2x the better peer", get(OURS, protocol, tool, c), peers, 2.0,
                                     False, c, tool))
        if 64 in concurrencies:
            for protocol in (V2, BINARY, GRPC):
                batching = get(BATCHING, protocol, tool, 64)
                ours = get(OURS, protocol, tool, 64)
                if batching is None and ours is None:
                    continue
                goals.append(_versus(f"{protocol} >= 1.5x MLServer batching", ours, [batching] if batching else [],
                                     1.5, True, 64, tool))
        for protocol in PROTOCOLS:
            for c in concurrencies:
                off, on = get(OURS, protocol, tool, c), get(POLICIES, protocol, tool, c)
                if off is None or on is None:
                    continue
                cost = (1 - on.measurement.rps / off.measurement.rps) * 100
                goals.append(Goal(f"{protocol} policies cost < 10%", c, tool, cost, 10.0, cost < 10.0,
                                  f"{on.measurement.rps:.0f} vs {off.measurement.rps:.0f} pred/s: "
                                  + _margin(cost, 10.0, "%")))
    return goals


def format_tables(best: Mapping[Key, Run], unavailable: Mapping[tuple[str, str], str]) -> str:
    """A table per protocol and concurrency (server, tool, pred/s, p50, p99, errors), then what was not available."""
    lines: list[str] = []
    groups = sorted({(k[1], k[3]) for k in best}, key=lambda g: (PROTOCOLS.index(g[0]), g[1]))
    for protocol, c in groups:
        lines += ["", f"{protocol}, concurrency {c}",
                  f"  {'server':<24}{'tool':<10}{'pred/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}"]
        rows = [r for k, r in best.items() if (k[1], k[3]) == (protocol, c)]
        for r in sorted(rows, key=lambda r: (SERVERS.index(r.server), TOOLS.index(r.tool))):
            m = r.measurement
            lines.append(f"  {r.server:<24}{r.tool:<10}{m.rps:>10.1f}{m.p50_ms:>10.2f}{m.p99_ms:>10.2f}{m.errors:>8}")
    if unavailable:
        lines += ["", "not available (probed once at start):"]
        lines += [f"  {server} {protocol}: {why}" for (server, protocol), why in sorted(unavailable.items())]
    return "\n".join(lines).lstrip("\n")


def format_goals(goals: Sequence[Goal]) -> str:
    """The goal lines, each marked met / NOT met / not available."""
    lines = ["goals (ratios measured in this run):"]
    for g in goals:
        mark = "met" if g.met else ("n/a" if g.ratio is None else "NOT met")
        lines.append(f"  [{mark:>7}] {g.name}, c={g.concurrency}, {g.tool}: {g.detail}")
    return "\n".join(lines)
