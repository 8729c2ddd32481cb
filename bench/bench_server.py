"""Predictions/s and p50/p99 latency for the iris model: our server vs MLServer vs KServe.

Usage: python -m bench.bench_server [--concurrency 16] [--duration 10] [--warmup 2] [--rounds 2]

The same signed iris parameters directory is served, one server at a time on 127.0.0.1,
by `modeldeploy serve`, by MLServer (mlserver + mlserver-sklearn) and by KServe's Python
model server (a `kserve.Model` around the same joblib). MLServer and KServe are installed
from PyPI into their own venvs under ~/.cache/modeldeploy/bench-venvs/ (their pins conflict
with ours), with the same scikit-learn version as ours so the pickle loads unchanged.
Every server gets the same closed-loop load from `modeldeploy loadtest` (the product's
own generator, in its own process): single-row requests, fixed concurrency, bounded
duration. Each server runs with its defaults (one process). The machine may be shared:
servers are measured in interleaved rounds and each one's best round is reported, so
compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import sklearn

from devcluster.child import stop_child, wait_answering
from devcluster.iris import sealed
from devcluster.ports import free_port, free_ports

REPO = Path(__file__).resolve().parents[1]
VENVS = Path.home() / ".cache" / "modeldeploy" / "bench-venvs"
SKLEARN = f"scikit-learn=={sklearn.__version__}"
BASELINES = {
    # uvloop 0.22 made get_event_loop() raise, which breaks MLServer 1.7.1's parallel workers
    "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop<0.22", SKLEARN],
    "kserve": ["kserve==0.21.0", SKLEARN, "joblib"],
}
ROW = {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}
V2_BODY = {"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP64", "data": list(ROW.values())}]}


@dataclass(frozen=True)
class Target:
    """One server under test: how to start it, where it is ready, what to POST where."""

    name: str
    command: list[str]
    ready_path: str
    path: str
    body: dict[str, object]
    env: dict[str, str] | None = None


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


def mlserver_dir(workdir: Path, model_dir: Path, port: int) -> Path:
    """An MLServer repository serving the same joblib."""
    root = workdir / "mlserver"
    (root / "iris").mkdir(parents=True)
    (root / "iris" / "model.joblib").write_bytes((model_dir / "model.joblib").read_bytes())
    settings = {"http_port": port, "grpc_port": free_port(), "metrics_port": free_port(), "host": "127.0.0.1"}
    (root / "settings.json").write_text(json.dumps(settings))
    model = {
        "name": "iris",
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": "1.0.0"},
    }
    (root / "iris" / "model-settings.json").write_text(json.dumps(model))
    return root


def targets(workdir: Path, model_dir: Path, public_key: Path) -> list[Target]:
    ours, mlserver, kserve = free_ports(3)
    serve = [
        sys.executable,
        "-c",
        "from modeldeploy.cli import main; main()",
        "serve",
        str(model_dir),
        "--public-key",
        str(public_key),
        "--port",
        str(ours),
    ]
    ml_venv = ensure_venv("mlserver", BASELINES["mlserver"])
    ks_venv = ensure_venv("kserve", BASELINES["kserve"])
    ml_root = mlserver_dir(workdir, model_dir, mlserver)
    return [
        Target(
            "modeldeploy /api",
            serve,
            f"http://127.0.0.1:{ours}/api/health/ready",
            f"http://127.0.0.1:{ours}/api/models/iris/prediction",
            ROW,
        ),
        Target(
            "modeldeploy v2",
            serve,
            f"http://127.0.0.1:{ours}/api/health/ready",
            f"http://127.0.0.1:{ours}/v2/models/iris/infer",
            {"inputs": [{**V2_BODY["inputs"][0], "name": "input-0"}]},
        ),  # type: ignore[dict-item]
        Target(
            "MLServer v2",
            [str(ml_venv / "bin" / "mlserver"), "start", str(ml_root)],
            f"http://127.0.0.1:{mlserver}/v2/models/iris/ready",
            f"http://127.0.0.1:{mlserver}/v2/models/iris/infer",
            V2_BODY,
        ),
        Target(
            "KServe v1",
            [
                str(ks_venv / "bin" / "python"),
                str(REPO / "bench" / "kserve_iris.py"),
                str(model_dir),
                str(kserve),
                str(free_port()),
            ],
            f"http://127.0.0.1:{kserve}/v1/models/iris",
            f"http://127.0.0.1:{kserve}/v1/models/iris:predict",
            {"instances": [list(ROW.values())]},
        ),
    ]


@contextlib.contextmanager
def running(target: Target, log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            target.command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **(target.env or {})}
        )
        try:
            wait_answering(target.ready_path, process, log, timeout=180, name=target.name)
            check = httpx.post(target.path, json=target.body, timeout=10)
            if check.status_code != 200:
                raise RuntimeError(f"{target.name}: {check.status_code} {check.text[:500]}")
            yield
        finally:
            stop_child(process)


def measure(target: Target, workdir: Path, concurrency: int, duration: float, warmup: float) -> dict[str, float]:
    """One closed-loop run of `modeldeploy loadtest` on `target`; its report's figures."""
    url = urlsplit(target.path)
    inputs = workdir / "body.jsonl"
    inputs.write_text(json.dumps(target.body) + "\n")
    report = workdir / "loadtest"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "from modeldeploy.cli import main; main()",
            "loadtest",
            f"{url.scheme}://{url.netloc}",
            "--path",
            url.path,
            "--input",
            str(inputs),
            "--users",
            str(concurrency),
            "--duration",
            f"{duration:g}s",
            "--warmup",
            f"{warmup:g}s",
            "--report",
            str(report),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + warmup + 120,
    )
    stats = json.loads((report / "report.json").read_text())["stats"]
    latency = stats["latency_ms"]
    return {
        "requests": stats["requests"],
        "errors": stats["failures"],
        "rps": round(stats["rps"], 1),
        **{f"{p}_ms": round(latency[p], 3) for p in ("p50", "p90", "p99", "max")},
    }


def format_report(results: dict[str, dict[str, float]], concurrency: int) -> str:
    lines = [
        f"iris, single-row requests, concurrency {concurrency}",
        f"{'server':<20}{'pred/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}",
    ]
    for name, r in results.items():
        lines.append(f"{name:<20}{r['rps']:>10.1f}{r['p50_ms']:>10.2f}{r['p99_ms']:>10.2f}{r['errors']:>8.0f}")
    best_name = max(("MLServer v2", "KServe v1"), key=lambda n: results[n]["rps"])
    best = results[best_name]
    for ours in ("modeldeploy /api", "modeldeploy v2"):
        r = results[ours]
        ratio = r["rps"] / best["rps"]
        lines.append(f"{ours} / {best_name}: {ratio:.2f}x pred/s, p99 {r['p99_ms']:.2f} vs {best['p99_ms']:.2f} ms")
    lines.append(
        f"modeldeploy v2 / MLServer v2 (same protocol): "
        f"{results['modeldeploy v2']['rps'] / results['MLServer v2']['rps']:.2f}x pred/s"
    )
    goal = (
        results["modeldeploy /api"]["rps"] >= 1.5 * best["rps"]
        and results["modeldeploy /api"]["p99_ms"] <= best["p99_ms"]
    )
    lines.append(f"goal (>= 1.5x the better baseline at no worse p99): {'met' if goal else 'NOT met'}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=2, help="runs per server; the best one is reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-server-") as tmp:
        workdir = Path(tmp)
        model_dir, keys = sealed(workdir)
        plan = targets(workdir, model_dir, keys.public)
        results: dict[str, dict[str, float]] = {}
        for round_ in range(1, args.rounds + 1):  # interleaved, alternating order: noise hits every server
            for target in plan if round_ % 2 else plan[::-1]:
                log = workdir / f"{target.name.replace(' ', '_').replace('/', '')}-{round_}.log"
                with running(target, log):
                    result = measure(target, workdir, args.concurrency, args.duration, args.warmup)
                print(f"round {round_} {target.name}: {json.dumps(result)}", flush=True)
                if target.name not in results or result["rps"] > results[target.name]["rps"]:
                    results[target.name] = result
        print(format_report(results, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
