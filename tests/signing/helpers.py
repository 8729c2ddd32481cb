"""Helpers shared by the signing and fetch tests."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from devcluster.iris import Keys
from modeldeploy.cli import main
from modeldeploy.params import signing

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = str(Path(sys.executable).with_name("model_signing"))


def upstream(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run the upstream `model_signing ARGS` command line."""
    return subprocess.run([UPSTREAM, *map(str, args)], capture_output=True, text=True, timeout=120)


def cli(*args: str | Path) -> Result:
    """Run `modeldeploy ARGS` in-process; stderr is kept apart from stdout."""
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def flip_byte(path: Path, offset: int = 10) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


RECORD_KEYS = {
    "verified", "reason", "message", "keyFingerprint", "manifestDigest", "signer", "issuer", "trustedBy",
    "hashAlgorithm", "signedPolicies", "failedFiles", "source",
}


def run_fetch(source: str | Path, dest: Path, public_key: Path, *extra: str | Path) -> tuple[Result, dict[str, Any]]:
    return fetch_with(source, dest, "--public-key", public_key, *extra)


def fetch_with(source: str | Path, dest: Path, *args: str | Path) -> tuple[Result, dict[str, Any]]:
    """`modeldeploy fetch SOURCE --dest DEST ARGS`, and the one record line it wrote."""
    log = dest.parent / "termination-log"
    result = cli("fetch", source, "--dest", dest, "--termination-log", log, *args)
    lines = log.read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert set(record) == RECORD_KEYS
    return result, record


def assert_refused(result: Result, record: dict[str, Any], dest: Path, reason: str) -> None:
    assert result.exit_code == 1
    assert record["verified"] is False and record["reason"] == reason, record
    assert reason in result.stderr and result.stderr.count("\n") == 1
    assert not dest.exists() or not any(dest.iterdir())
    assert not list(dest.parent.glob(f".{dest.name}.fetch-*")), "staging directory left behind"


def assert_installed(result: Result, record: dict[str, Any], dest: Path, keys: Keys) -> None:
    assert result.exit_code == 0, result.output
    assert record["verified"] is True and record["reason"] == "SignatureValid"
    assert record["keyFingerprint"] == keys.fingerprint
    assert sorted(p.name for p in dest.iterdir()) == [
        ".modeldeploy-fetch.json",
        "model.joblib",
        "model.sig",
        "model.yaml",
    ]
    assert signing.verify(dest, keys.public).manifest_digest == record["manifestDigest"]
    assert not list(dest.parent.glob(f".{dest.name}.fetch-*"))


def tar_gz(path: Path, members: dict[str, bytes], prefix: str = "") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def files_of(model_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(model_dir.iterdir())}
