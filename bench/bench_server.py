"""Side-by-side serving benchmark of the iris model: our server vs MLServer vs KServe, per protocol.

Usage: python -m bench.bench_server [--quick] [--concurrency 1,8,64] [--servers ...] [--protocols ...]
                                    [--tools loadtest,wrk,ghz] [--duration 4] [--rounds 2] [--json PATH]
                                    [--grpc-connections 1]

The same signed iris parameters are served, one server at a time on 127.0.0.1, by
`modeldeploy serve` (also a second signed tree with three CEL policies in its policies.yaml),
by MLServer 1.7.1 (defaults, and again with adaptive batching on) and by KServe 0.21 (a
`kserve.Model` around the same joblib, bench/kserve_iris.py). MLServer and KServe live in their
own venvs under ~/.cache/modeldeploy/bench-venvs/ (their pins conflict with ours), with our
scikit-learn so the pickle loads unchanged. Protocols: our REST seed path, KServe's v1, v2 REST
JSON, v2 REST with the binary data extension, and v2 gRPC. Every target is probed once at its
first start; what does not answer is reported "not available", never measured.

Loads, closed loop, single-row requests, bounded duration: `modeldeploy loadtest` and wrk
(one thread, bench/wrk_post.lua) for REST, ghz (one CPU; `--grpc-connections` HTTP/2 connections, the
same for every server, at most one per concurrent call) for gRPC. The machine
has 2 cores, shared by the server, the load generator and whatever else runs: servers are
measured in interleaved rounds (the order alternates), each target's best round is reported,
and only the ratios of one run compare.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import sklearn
import yaml

from bench import serving
from bench.serving import (
    BATCHING,
    BINARY,
    GHZ,
    GRPC,
    KSERVE,
    LOADTEST,
    MLSERVER,
    OURS,
    POLICIES,
    SEED,
    V1,
    V2,
    WRK,
    Measurement,
    Run,
    ToolOutputError,
)
from devcluster.child import stop_child, wait_answering
from devcluster.iris import sealed, train
from devcluster.ports import free_port
from modeldeploy.contract.pod import SIGNED_POLICIES
from modeldeploy.params import signing

REPO = Path(__file__).resolve().parents[1]
CACHE = Path.home() / ".cache" / "modeldeploy"
VENVS = CACHE / "bench-venvs"
BIN = CACHE / "bin"
SKLEARN = f"scikit-learn=={sklearn.__version__}"
BASELINES = {
    # uvloop 0.22 made get_event_loop() raise, which breaks MLServer 1.7.1's parallel workers
    "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22", SKLEARN],
    "kserve": ["kserve==0.21.0", SKLEARN, "joblib"],
}
GHZ_MODULE = "github.com/bojand/ghz/cmd/ghz@v0.93.0"  # the proxy's latest
# the v2 gRPC service's proto: ours once model_server ships it, else a descriptor set written from KServe's package
PROTO = REPO / "model_server" / "_proto" / "grpc_predict_v2.proto"
GRPC_CALL = "inference.GRPCInferenceService.ModelInfer"
WRK_SCRIPT = REPO / "bench" / "wrk_post.lua"
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
ROWS = [list(ROW.values())]
# MLServer's adaptive batching: up to this many requests, waiting at most this long (s) for them
MAX_BATCH_SIZE, MAX_BATCH_TIME = 64, 0.002
# three signed guardrails that are evaluated on every prediction and let the benchmark's row through
BENCH_POLICIES = [
    {"name": "no-tiny-flowers", "when": "input.sepal_length < 1.0", "action": "reject",
     "message": "Sepal length below 1 cm is outside the training data."},
    {"name": "no-giant-petals", "when": "input.petal_length > 10.0 || input.petal_width > 5.0", "action": "reject"},
    {"name": "narrow-virginica", "when": "prediction.species == 'virginica' && input.petal_width < 0.5",
     "action": "override", "value": "versicolor"},
]
QUICK = {"rounds": 1, "duration": 2.0, "warmup": 0.5}  # and c=8,64 unless --concurrency is given


@dataclass(frozen=True)
class Target:
    """One protocol of one server: where to send what (an HTTP URL with body and headers, or a gRPC address)."""

    server: str
    protocol: str
    url: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    grpc_request: dict[str, Any] | None = None


@dataclass(frozen=True)
class Server:
    """One server process under test and the targets it answers."""

    name: str
    command: list[str]
    ready_url: str
    targets: list[Target]


def ensure_venv(name: str, packages: list[str]) -> Path:
    """A venv with exactly these pinned packages (re-installed when the pins change)."""
    venv = VENVS / name
    stamp = venv / "bench-packages.json"
    if stamp.exists() and json.loads(stamp.read_text()) == packages:
        return venv
    VENVS.mkdir(parents=True, exist_ok=True)
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *packages], check=True)
    stamp.write_text(json.dumps(packages))
    return venv


def ensure_ghz() -> tuple[Path | None, str]:
    """ghz, built once with `go install` into ~/.cache/modeldeploy/bin; (None, why) when it cannot be had."""
    ghz = BIN / "ghz"
    if ghz.exists():
        return ghz, ""
    go = shutil.which("go") or next((g for g in ("/usr/local/go/bin/go",) if Path(g).exists()), None)
    if go is None:
        return None, "ghz is not installed and no Go toolchain was found to build it"
    BIN.mkdir(parents=True, exist_ok=True)
    built = subprocess.run([go, "install", GHZ_MODULE], env={**os.environ, "GOBIN": str(BIN)}, capture_output=True,
                           text=True, timeout=900, check=False)
    return (ghz, "") if built.returncode == 0 else (None, f"go install {GHZ_MODULE} failed: {built.stderr[-300:]}")


def proto_args(workdir: Path, kserve_venv: Path) -> list[str]:
    """ghz's arguments naming the v2 gRPC service: our proto when present, else a descriptor set from KServe's."""
    if PROTO.exists():
        return ["--import-paths", str(PROTO.parent), "--proto", str(PROTO)]
    protoset = workdir / "grpc_predict_v2.protoset"
    code = (
        "import sys\nfrom google.protobuf import descriptor_pb2\n"
        "from kserve.protocol.grpc import grpc_predict_v2_pb2 as v2\n"
        "s = descriptor_pb2.FileDescriptorSet()\ns.file.add().ParseFromString(v2.DESCRIPTOR.serialized_pb)\n"
        "open(sys.argv[1], 'wb').write(s.SerializeToString())\n"
    )
    subprocess.run([str(kserve_venv / "bin" / "python"), "-c", code, str(protoset)], check=True)
    return ["--protoset", str(protoset)]


def policies_tree(workdir: Path, keys_private: Path, keys_public: Path) -> Path:
    """The iris parameters with BENCH_POLICIES signed into the tree's policies.yaml, as a user would ship them."""
    model_dir = train(workdir / "iris-policies")
    (model_dir / SIGNED_POLICIES).write_text(yaml.safe_dump({"policies": BENCH_POLICIES}, sort_keys=False))
    signing.seal(model_dir, keys_private, keys_public)
    return model_dir


def mlserver_dir(workdir: Path, model_dir: Path, name: str, http: int, grpc: int, batching: bool) -> Path:
    """An MLServer repository serving the same joblib (with adaptive batching when `batching`)."""
    root = workdir / name
    (root / "iris").mkdir(parents=True)
    (root / "iris" / "model.joblib").write_bytes((model_dir / "model.joblib").read_bytes())
    settings = {"http_port": http, "grpc_port": grpc, "metrics_port": free_port(), "host": "127.0.0.1"}
    (root / "settings.json").write_text(json.dumps(settings))
    model: dict[str, Any] = {
        "name": "iris",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "1.0.0"},
    }
    if batching:
        model |= {"max_batch_size": MAX_BATCH_SIZE, "max_batch_time": MAX_BATCH_TIME}
    (root / "iris" / "model-settings.json").write_text(json.dumps(model))
    return root


def v2_targets(server: str, base: str, grpc: str, input_name: str) -> list[Target]:
    """The v2 targets of a server at `base` (HTTP) and `grpc` (host:port)."""
    json_body = {"inputs": [{"name": input_name, "shape": [1, 4], "datatype": "FP64", "data": ROWS[0]}]}
    binary, headers = serving.v2_binary_body(input_name, ROWS)
    infer = f"{base}/v2/models/iris/infer"
    targets = [
        Target(server, V2, infer, json.dumps(json_body).encode()),
        Target(server, BINARY, infer, binary, headers),
    ]
    return [*targets, Target(server, GRPC, grpc, grpc_request=serving.grpc_infer_request("iris", input_name, ROWS))]


def our_server(name: str, model_dir: Path, public_key: Path, grpc: bool, workers: str | None) -> Server:
    port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-c", "from modeldeploy.cli import main; main()", "serve", str(model_dir),
               "--public-key", str(public_key), "--port", str(port)]
    command += ["--grpc-port", str(grpc_port)] if grpc else []
    command += ["--workers", workers] if workers else []
    base = f"http://127.0.0.1:{port}"
    seed = Target(name, SEED, f"{base}/api/models/iris/prediction", json.dumps(ROW).encode())
    targets = [seed, *v2_targets(name, base, f"127.0.0.1:{grpc_port}", "input-0")]
    return Server(name, command, f"{base}/api/health/ready", targets)


def build_servers(workdir: Path, model_dir: Path, policies_dir: Path, public_key: Path, args: argparse.Namespace,
                  serve_help: str) -> list[Server]:
    """Every server of the comparison (ours with and without policies, MLServer twice, KServe)."""
    grpc = "--grpc-port" in serve_help
    workers = args.workers if args.workers and "--workers" in serve_help else None
    servers = [our_server(OURS, model_dir, public_key, grpc, workers),
               our_server(POLICIES, policies_dir, public_key, grpc, workers)]
    ml_venv = ensure_venv("mlserver", BASELINES["mlserver"])
    for name, batching in ((MLSERVER, False), (BATCHING, True)):
        http, grpc_port = free_port(), free_port()
        root = mlserver_dir(workdir, model_dir, name.replace(" ", "-"), http, grpc_port, batching)
        base = f"http://127.0.0.1:{http}"
        servers.append(Server(name, [str(ml_venv / "bin" / "mlserver"), "start", str(root)],
                              f"{base}/v2/models/iris/ready",
                              v2_targets(name, base, f"127.0.0.1:{grpc_port}", "predict")))
    ks_venv = ensure_venv("kserve", BASELINES["kserve"])
    http, grpc_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http}"
    v1 = Target(KSERVE, V1, f"{base}/v1/models/iris:predict", json.dumps({"instances": ROWS}).encode())
    servers.append(Server(
        KSERVE,
        [str(ks_venv / "bin" / "python"), str(REPO / "bench" / "kserve_iris.py"), str(model_dir), str(http),
         str(grpc_port)],
        f"{base}/v1/models/iris",
        [v1, *v2_targets(KSERVE, base, f"127.0.0.1:{grpc_port}", "predict")],
    ))
    return servers


@contextlib.contextmanager
def running(server: Server, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(server.command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        try:
            wait_answering(server.ready_url, process, log, timeout=180, name=server.name)
            yield
        finally:
            stop_child(process)


@dataclass
class Tools:
    """The load tools found here, and what ghz needs."""

    wrk: str | None
    ghz: Path | None
    proto: list[str]
    notes: list[str]
    grpc_connections: int = 1  # ghz --connections (capped by the concurrency: ghz needs c >= connections)


def run_tool(tool: str, target: Target, tools: Tools, concurrency: int, duration: float, work: Path) -> Measurement:
    """One closed-loop run of `tool` on `target`.

    Raises:
        ToolOutputError: the tool's output has no figures (e.g. it could not connect).
        subprocess.CalledProcessError: the tool failed.
    """
    body = work / "body.bin"
    body.write_bytes(target.body)
    limit = duration + 120
    if tool == LOADTEST:
        report = work / "loadtest"
        headers = [arg for name, value in target.headers.items() for arg in ("--header", f"{name}: {value}")]
        url = urlsplit(target.url)
        subprocess.run(
            [sys.executable, "-c", "from modeldeploy.cli import main; main()", "loadtest",
             f"{url.scheme}://{url.netloc}", "--path", url.path,
             "--body", str(body), *headers, "--users", str(concurrency), "--duration", f"{duration:g}s",
             "--report", str(report)],
            cwd=REPO, capture_output=True, text=True, check=True, timeout=limit,
        )
        return serving.parse_loadtest(json.loads((report / "report.json").read_text()))
    if tool == WRK:
        assert tools.wrk is not None
        env = {**os.environ, "WRK_BODY_FILE": str(body),
               "WRK_HEADERS": "\n".join(f"{k}: {v}" for k, v in target.headers.items())}
        done = subprocess.run(
            [tools.wrk, "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--timeout", "10s", "--latency",
             "-s", str(WRK_SCRIPT), target.url],
            env=env, capture_output=True, text=True, check=True, timeout=limit,
        )
        return serving.parse_wrk(done.stdout)
    assert tools.ghz is not None and target.grpc_request is not None
    out = work / "ghz.json"
    subprocess.run(
        [str(tools.ghz), "--insecure", *tools.proto, "--call", GRPC_CALL, "-d", json.dumps(target.grpc_request),
         "-c", str(concurrency), "--connections", str(min(concurrency, tools.grpc_connections)),
         "-z", f"{duration:g}s", "--duration-stop", "wait", "--cpus", "1", "--format", "json",
         "-o", str(out), target.url],
        capture_output=True, text=True, check=True, timeout=limit,
    )
    return serving.parse_ghz(out.read_text())


def tools_for(target: Target, tools: Tools, wanted: Sequence[str]) -> list[str]:
    """The load tools that apply to `target` and are here: ghz for gRPC, loadtest and wrk for REST."""
    found = {LOADTEST: True, WRK: tools.wrk is not None, GHZ: tools.ghz is not None}
    applicable = (GHZ,) if target.protocol == GRPC else (LOADTEST, WRK)
    return [t for t in applicable if t in wanted and found[t]]


def probe(target: Target, tools: Tools, work: Path) -> str | None:
    """None when `target` answers one request with success, else why not (it is then reported, not measured)."""
    if target.protocol == GRPC:
        if tools.ghz is None:
            return "ghz is not available"
        try:
            result = run_tool(GHZ, target, tools, 1, 0.2, work)
        except (subprocess.CalledProcessError, ToolOutputError) as err:
            return f"no ModelInfer answer: {getattr(err, 'stderr', '') or err}"[:200]
        return None if result.errors == 0 and result.requests else "ModelInfer failed"
    try:
        headers = {"Content-Type": "application/json", **target.headers}
        answer = httpx.post(target.url, content=target.body, headers=headers, timeout=10)
    except httpx.HTTPError as err:
        return f"{type(err).__name__}: {err}"
    if answer.status_code == 200:
        return None
    lines = answer.text.strip().splitlines() or [""]  # a traceback's last line names the exception
    return f"HTTP {answer.status_code}: {lines[-1][:160]}"


def check_policies(server: Server) -> None:
    """The server with policies lists exactly the signed BENCH_POLICIES (else its numbers would mean nothing).

    Raises:
        RuntimeError: it lists other policies.
    """
    base = server.ready_url.removesuffix("/api/health/ready")
    listed = httpx.get(f"{base}/api/models/iris/metadata", timeout=10).raise_for_status().json()["policies"]
    expected = [{"name": p["name"], "source": "signed", "action": p["action"]} for p in BENCH_POLICIES]
    if listed != expected:
        raise RuntimeError(f"{server.name} lists the policies {listed}, not the signed {expected}")


def parse_list(text: str, allowed: Sequence[str]) -> list[str]:
    """A comma-separated subset of `allowed` (case-insensitive), in `allowed`'s order."""
    asked = {part.strip().lower() for part in text.split(",") if part.strip()}
    unknown = asked - {a.lower() for a in allowed}
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {sorted(unknown)}; choose from {', '.join(allowed)}")
    return [a for a in allowed if a.lower() in asked]


def arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--concurrency", type=lambda t: [int(c) for c in t.split(",")],
                        help="closed-loop connections, comma-separated [1,8,64; --quick: 8,64]")
    parser.add_argument("--servers", default=",".join(serving.SERVERS),
                        type=lambda t: parse_list(t, serving.SERVERS), help="subset of: " + ", ".join(serving.SERVERS))
    parser.add_argument("--protocols", default=",".join(serving.PROTOCOLS),
                        type=lambda t: parse_list(t, serving.PROTOCOLS),
                        help="subset of: " + ", ".join(serving.PROTOCOLS))
    parser.add_argument("--tools", default=",".join(serving.TOOLS), type=lambda t: parse_list(t, serving.TOOLS))
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measured run (wrk: whole) [3]")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of unrecorded load per target and start")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; each target's best is reported")
    parser.add_argument("--grpc-connections", type=int, default=1,
                        help="HTTP/2 connections ghz spreads its calls over, for every server (a client pool) [1]")
    parser.add_argument("--workers", help="modeldeploy serve --workers N|auto (when our server has it)")
    parser.add_argument("--quick", action="store_true", help="one round of 2 s runs at c=8,64 (about 4 minutes)")
    parser.add_argument("--json", type=Path, help="also write the runs, best rounds and goals here")
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    if args.concurrency is None:
        args.concurrency = [8, 64] if args.quick else [1, 8, 64]
    if any(c < 1 for c in args.concurrency):
        parser.error("--concurrency: each must be at least 1")
    if args.grpc_connections < 1:
        parser.error("--grpc-connections: give at least 1")
    return args


def find_tools(workdir: Path, wanted: Sequence[str]) -> Tools:
    """wrk from PATH (Debian's `wrk` package), ghz from the cache (built when missing); notes say what is not."""
    notes: list[str] = []
    wrk = shutil.which("wrk") if WRK in wanted else None
    if WRK in wanted and wrk is None:
        notes.append("wrk is not installed (apt-get install wrk): REST measured with loadtest only")
    ghz, proto = None, []
    if GHZ in wanted:
        ghz, why = ensure_ghz()
        if ghz is None:
            notes.append(f"{why}: gRPC not measured")
        else:
            proto = proto_args(workdir, ensure_venv("kserve", BASELINES["kserve"]))
    return Tools(wrk, ghz, proto, notes)


def main(argv: Sequence[str] | None = None) -> int:
    args = arguments(argv)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        workdir = Path(tmp)
        model_dir, keys = sealed(workdir)
        policies_dir = policies_tree(workdir, keys.private, keys.public)
        serve_help = subprocess.run(
            [sys.executable, "-c", "from modeldeploy.cli import main; main()", "serve", "--help"],
            capture_output=True, text=True, check=True, cwd=REPO,
        ).stdout
        tools = find_tools(workdir, args.tools)
        tools.grpc_connections = args.grpc_connections
        for note in tools.notes:
            print(f"note: {note}", flush=True)
        plan = [s for s in build_servers(workdir, model_dir, policies_dir, keys.public, args, serve_help)
                if s.name in args.servers]
        unavailable: dict[tuple[str, str], str] = {}
        if "--grpc-port" not in serve_help:
            unavailable |= {(s, GRPC): "modeldeploy serve has no --grpc-port yet" for s in (OURS, POLICIES)}
        runs: list[Run] = []
        for round_ in range(1, args.rounds + 1):  # interleaved, alternating order: noise hits every server
            for server in plan if round_ % 2 else plan[::-1]:
                log = workdir / f"{server.name.replace(' ', '_')}-{round_}.log"
                with running(server, log):
                    if server.name == POLICIES:
                        check_policies(server)
                    for target in server.targets:
                        key = (target.server, target.protocol)
                        if target.protocol not in args.protocols or key in unavailable:
                            continue
                        if round_ == 1 and (why := probe(target, tools, workdir)) is not None:
                            unavailable[key] = why
                            print(f"{target.server} {target.protocol}: not available ({why})", flush=True)
                            continue
                        order = tools_for(target, tools, args.tools)
                        if args.warmup and order:
                            run_tool(order[0], target, tools, max(args.concurrency), args.warmup, workdir)
                        for c in args.concurrency:
                            for tool in order if round_ % 2 else order[::-1]:
                                measurement = run_tool(tool, target, tools, c, args.duration, workdir)
                                runs.append(Run(target.server, target.protocol, tool, c, round_, measurement))
                                print(f"round {round_} {target.server} {target.protocol} c={c} {tool}: "
                                      f"{measurement.rps:.0f}/s p50 {measurement.p50_ms:.2f} "
                                      f"p99 {measurement.p99_ms:.2f} ms errors {measurement.errors}", flush=True)
        best = serving.best_runs(runs)
        goals = serving.evaluate_goals(best, args.concurrency)
        elapsed = time.monotonic() - started
        print(f"\niris, single-row requests, closed loop, {args.duration:g}s runs, best of {args.rounds} "
              f"interleaved round(s), {os.cpu_count()} cores shared by server and load generator; {elapsed:.0f}s")
        if GRPC in args.protocols:
            print(f"gRPC: ghz over {args.grpc_connections} HTTP/2 connection(s) (at most c) to every server")
        print(serving.format_tables(best, unavailable))
        print()
        print(serving.format_goals(goals))
        for note in tools.notes:
            print(f"note: {note}")
        if args.json:
            document = {
                "meta": {"command": sys.argv, "machine": platform.platform(), "cores": os.cpu_count(),
                         "elapsed_s": round(elapsed, 1),
                         **{k: v for k, v in vars(args).items() if k not in ("json",)}},
                "notes": tools.notes,
                "unavailable": [{"server": s, "protocol": p, "why": w} for (s, p), w in unavailable.items()],
                "runs": [asdict(r) for r in runs],
                "best": [asdict(r) for r in best.values()],
                "goals": [asdict(g) for g in goals],
            }
            args.json.write_text(json.dumps(document, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
