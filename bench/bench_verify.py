"""Verify throughput on a 1 GiB parameters directory for sha256 and blake3, as ratios to the hash
library over the same bytes and to the upstream model_signing command; and the server's
load-time check now (issue 11) as a ratio to the check it replaced.

Usage: python -m bench.bench_verify [--size-mib 1024] [--repeat 5] [--pairs 5] [--goal 0.8] [--upstream-goal 1.0]

Writes random parameters in two layouts (one 1 GiB file; eight 128 MiB shards, the artifact
being the first). For each layout and each hash (sha256, blake3) it signs the tree, then
times, interleaved in the same run:

- in process: the hash library alone over every file (`hashlib.sha256` in 1 MiB reads, or
  the `blake3` package's multithreaded mmap hashing, as model_signing uses it) against
  `signing.verify` (signature + every file): `verify_ratio` = library time / verify time;
- whole commands, in pairs (upstream, then ours, `--pairs` times after one warm-up):
  `model_signing verify key` against `modeldeploy verify --public-key` on the same tree;
  `upstream_ratio` = the median over pairs of upstream time / our time (>= 1.0: ours is as
  fast or faster). model_signing 1.1.1's CLI hashes with sha256 whatever the signature says,
  so for blake3 the upstream side is its Python API (`verifying.Config().use_elliptic_key_verifier
  (...).verify(...)`, which reads the hash from the signature) run as a command.

For sha256 it also times the load-time check before issue 11 (`before`: re-hash every file
against the recorded, unsigned manifest) and now (`now`: `verify_tree`, then the artifact and
model.yaml read into memory and hashed again, as the flavors load them); the iris example is
measured the same way. Files are read once first so every timing reads from the page cache.
Reports the best of --repeat rounds (medians for the pairs); exits 1 when a verify ratio is
below --goal or an upstream ratio below --upstream-goal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import blake3

from devcluster.iris import Keys, train, write_keys
from modeldeploy.params import signing

CHUNK = 1 << 20
ROOT = Path(__file__).resolve().parents[1]
UPSTREAM = str(Path(sys.executable).with_name("model_signing"))
HASHES = ("sha256", "blake3")
# model_signing's API verifier with no hashing configuration: it hashes as the signature says
UPSTREAM_API_VERIFY = (
    "import sys; from model_signing import verifying; "
    "verifying.Config().use_elliptic_key_verifier(public_key=sys.argv[3]).verify(sys.argv[1], sys.argv[2])"
)


def write_layout(root: Path, size: int, shards: int) -> Path:
    """A parameters directory of `shards` random files totalling `size` bytes, plus model.yaml."""
    root.mkdir()
    (root / "model.yaml").write_text("name: bench\nversion: 1.0.0\nflavor: sklearn\nartifact: shard-000.bin\n")
    for index in range(shards):
        with (root / f"shard-{index:03d}.bin").open("wb") as out:
            for _ in range(size // shards // CHUNK):
                out.write(os.urandom(CHUNK))
    return root


def signed_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.name not in signing.UNSIGNED)


def sha256_baseline(root: Path) -> None:
    """hashlib.sha256 over every file, one after the other, in 1 MiB reads."""
    for path in signed_files(root):
        digest = hashlib.sha256()
        with path.open("rb") as src:
            while chunk := src.read(CHUNK):
                digest.update(chunk)


def blake3_baseline(root: Path) -> None:
    """The blake3 package over every file, one after the other, memory-mapped on every core."""
    for path in signed_files(root):
        blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap(path).digest()


BASELINES: dict[str, Callable[[Path], None]] = {"sha256": sha256_baseline, "blake3": blake3_baseline}


def best_interleaved(repeat: int, actions: dict[str, Callable[[], object]]) -> dict[str, float]:
    """Best time of each action over `repeat` rounds; each round runs every action once,
    so load from other processes affects them alike."""
    best = {name: float("inf") for name in actions}
    for _ in range(repeat):
        for name, action in actions.items():
            started = time.perf_counter()
            action()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def timed_command(argv: list[str]) -> float:
    """Wall seconds of one run of `argv` (from the checkout, so its packages are the ones run)."""
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:  # a refusal is fast: it must never count as a verification
        raise RuntimeError(f"{argv[:3]} failed: {done.stderr.strip()[-300:]}")
    return elapsed


def paired_commands(pairs: int, upstream: list[str], ours: list[str]) -> dict[str, float]:
    """Upstream then ours, `pairs` times after a warm-up of each; medians and the median ratio."""
    timed_command(upstream)
    timed_command(ours)
    times = [(timed_command(upstream), timed_command(ours)) for _ in range(pairs)]
    return {
        "upstream_command_s": round(statistics.median(theirs for theirs, _ in times), 3),
        "our_command_s": round(statistics.median(mine for _, mine in times), 3),
        "upstream_ratio": round(statistics.median(theirs / mine for theirs, mine in times), 3),
    }


def upstream_command(root: Path, public_key: Path, hash_algorithm: str) -> list[str]:
    """The upstream verification of `root` as a command: its CLI for sha256, its API otherwise."""
    signature = root / signing.SIGNATURE
    if hash_algorithm == "sha256":
        return [UPSTREAM, "verify", "key", str(root), "--signature", str(signature), "--public_key", str(public_key)]
    return [sys.executable, "-c", UPSTREAM_API_VERIFY, str(root), str(signature), str(public_key)]


def our_command(root: Path, public_key: Path) -> list[str]:
    return [sys.executable, "-c", "from modeldeploy.cli import main; main()", "verify", str(root),
            "--public-key", str(public_key)]


def check_before(root: Path, files: dict[str, str]) -> None:
    """The load-time check before issue 11: re-hash the tree against a recorded (unsigned) manifest."""
    config = signing._hashing_config({"method": "files", "hash_type": "sha256"}, signing.UNSIGNED)
    if signing._hash(root, config) != files:
        raise AssertionError("tree changed")


def check_now(root: Path, public_key: Path, artifact: str) -> None:
    """The load-time check now: the signature and every file, then the loaded files' bytes."""
    tree = signing.verify_tree(root, public_key)
    tree.read("model.yaml")
    tree.read(artifact)


def load_checks(root: Path, public_key: Path, artifact: str, repeat: int) -> dict[str, float]:
    files = signing.verify(root, public_key).files  # also warms the page cache
    best = best_interleaved(
        repeat, {"before": lambda: check_before(root, files), "now": lambda: check_now(root, public_key, artifact)}
    )
    return {
        "load_check_before_s": round(best["before"], 4),
        "load_check_now_s": round(best["now"], 4),
        "load_check_ratio_now_to_before": round(best["now"] / best["before"], 2),
    }


def measure(root: Path, keys: Keys, hash_algorithm: str, repeat: int, pairs: int) -> dict[str, float]:
    """Sign `root` with `hash_algorithm`, then time verify against the library and upstream."""
    signing.sign(root, keys.private, hash_algorithm=hash_algorithm)
    size = sum(p.stat().st_size for p in signed_files(root))
    assert signing.verify(root, keys.public).hash_algorithm == hash_algorithm  # also warms the page cache
    baseline = BASELINES[hash_algorithm]
    best = best_interleaved(
        repeat, {"library": lambda: baseline(root), "verify": lambda: signing.verify(root, keys.public)}
    )
    mib = size / (1 << 20)
    report: dict[str, float] = {
        "bytes": size,
        "library_mib_s": round(mib / best["library"], 1),
        "verify_mib_s": round(mib / best["verify"], 1),
        "verify_ratio": round(best["library"] / best["verify"], 3),
        **paired_commands(pairs, upstream_command(root, keys.public, hash_algorithm), our_command(root, keys.public)),
    }
    if hash_algorithm == "sha256":
        report.update(load_checks(root, keys.public, "shard-000.bin", repeat))
    return report


def iris(tmp: Path, keys: Keys, repeat: int) -> dict[str, float]:
    """The load-time checks on the iris example (examples/iris/train.py)."""
    root = train(tmp / "iris")
    signing.sign(root, keys.private)
    return load_checks(root, keys.public, "model.joblib", max(repeat, 20))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=5, help="paired whole-command runs against upstream")
    parser.add_argument("--goal", type=float, default=0.8, help="minimum verify throughput / library throughput")
    parser.add_argument("--upstream-goal", type=float, default=1.0,
                        help="minimum upstream command time / our command time")
    args = parser.parse_args()
    report: dict[str, object] = {"cpus": os.cpu_count(), "goal_ratio": args.goal, "upstream_goal": args.upstream_goal}
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        keys = write_keys(Path(tmp) / "keys")
        report["iris"] = iris(Path(tmp), keys, args.repeat)
        for label, shards in (("1_file", 1), ("8_shards", 8)):
            root = write_layout(Path(tmp) / label, args.size_mib << 20, shards)
            for hash_algorithm in HASHES:
                results[f"{label}_{hash_algorithm}"] = measure(root, keys, hash_algorithm, args.repeat, args.pairs)
    report.update(results)
    print(json.dumps(report, indent=2))
    for name, result in results.items():
        print(f"goal {name}: verify_ratio {result['verify_ratio']} >= {args.goal}; "
              f"upstream_ratio {result['upstream_ratio']} >= {args.upstream_goal}")
    passed = all(r["verify_ratio"] >= args.goal and r["upstream_ratio"] >= args.upstream_goal
                 for r in results.values())
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
