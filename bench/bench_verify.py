"""Verify throughput on a 1 GiB parameters directory, as a ratio to hashlib.sha256 over the same bytes,
and the server's load-time check now (issue 11) as a ratio to the check it replaced.

Usage: python -m bench.bench_verify [--size-mib 1024] [--repeat 5] [--goal 0.8]

Writes random parameters in two layouts (one 1 GiB file; eight 128 MiB shards, the
artifact being the first), signs each, then times, on the same machine and in the same
run, interleaved: a plain chunked `hashlib.sha256` over every file (the baseline),
`signing.verify` (signature + every file), the load-time check before issue 11
(`before`: re-hash every file against the recorded, unsigned manifest) and the one now
(`now`: `verify_tree` checks the signature and every file, then the artifact and
model.yaml are read into memory and hashed again, as the flavors load them). The iris
example model is measured the same way. Files are read once first so every timing reads
from the page cache. Reports the best of --repeat rounds; exits 1 when a verify ratio is
below --goal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from devcluster.iris import Keys, train, write_keys
from modeldeploy.params import signing

CHUNK = 1 << 20


def write_layout(root: Path, size: int, shards: int) -> Path:
    """A parameters directory of `shards` random files totalling `size` bytes, plus model.yaml."""
    root.mkdir()
    (root / "model.yaml").write_text("name: bench\nversion: 1.0.0\nflavor: sklearn\nartifact: shard-000.bin\n")
    for index in range(shards):
        with (root / f"shard-{index:03d}.bin").open("wb") as out:
            for _ in range(size // shards // CHUNK):
                out.write(os.urandom(CHUNK))
    return root


def sha256_baseline(root: Path) -> None:
    """hashlib.sha256 over every file, one after the other, in 1 MiB reads."""
    for path in sorted(root.iterdir()):
        digest = hashlib.sha256()
        with path.open("rb") as src:
            while chunk := src.read(CHUNK):
                digest.update(chunk)


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


def measure(root: Path, public_key: Path, repeat: int) -> dict[str, float]:
    size = sum(p.stat().st_size for p in root.iterdir() if p.name not in signing.UNSIGNED)
    signing.verify(root, public_key)  # also warms the page cache
    best = best_interleaved(
        repeat, {"sha256": lambda: sha256_baseline(root), "verify": lambda: signing.verify(root, public_key)}
    )
    baseline, verify = best["sha256"], best["verify"]
    mib = size / (1 << 20)
    return {
        "bytes": size,
        "sha256_mib_s": round(mib / baseline, 1),
        "verify_mib_s": round(mib / verify, 1),
        "verify_ratio": round(baseline / verify, 3),
        **load_checks(root, public_key, "shard-000.bin", repeat),
    }


def iris(tmp: Path, keys: Keys, repeat: int) -> dict[str, float]:
    """The load-time checks on the iris example (examples/iris/train.py)."""
    root = train(tmp / "iris")
    signing.sign(root, keys.private)
    return load_checks(root, keys.public, "model.joblib", max(repeat, 20))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--goal", type=float, default=0.8, help="minimum verify throughput / sha256 throughput")
    args = parser.parse_args()
    report: dict[str, object] = {"cpus": os.cpu_count(), "goal_ratio": args.goal}
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        keys = write_keys(Path(tmp) / "keys")
        report["iris"] = iris(Path(tmp), keys, args.repeat)
        for label, shards in (("1_file", 1), ("8_shards", 8)):
            root = write_layout(Path(tmp) / label, args.size_mib << 20, shards)
            signing.sign(root, keys.private)
            report[label] = measure(root, keys.public, args.repeat)
    print(json.dumps(report, indent=2))
    ratios = [report[label]["verify_ratio"] for label in ("1_file", "8_shards")]  # type: ignore[index]
    return 0 if min(ratios) >= args.goal else 1


if __name__ == "__main__":
    sys.exit(main())
