"""`modeldeploy fetch s3://...` against a real MinIO server on loopback (built by scripts/build-minio.sh)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from devcluster.child import stop_child, wait_answering
from devcluster.iris import Keys
from devcluster.ports import free_ports
from modeldeploy.params import signing

from .helpers import ROOT, assert_installed, assert_refused, files_of, flip_byte, run_fetch, tar_gz

ACCESS_KEY, SECRET_KEY = "modeldeploy-test", "modeldeploy-test-secret"


@dataclass(frozen=True)
class Minio:
    endpoint: str
    bucket: str

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )


@pytest.fixture(scope="session")
def minio_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = subprocess.run(
        ["bash", str(ROOT / "scripts/build-minio.sh")], check=True, capture_output=True, text=True, timeout=1800
    ).stdout.strip()
    port, console = free_ports(2)
    env = {**os.environ, "MINIO_ROOT_USER": ACCESS_KEY, "MINIO_ROOT_PASSWORD": SECRET_KEY, "MINIO_BROWSER": "off"}
    data = tmp_path_factory.mktemp("minio-data")
    log = (data.parent / "minio.log").open("wb")
    process = subprocess.Popen(
        [binary, "server", str(data), "--address", f"127.0.0.1:{port}", "--console-address", f"127.0.0.1:{console}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        wait_answering(f"{endpoint}/minio/health/ready", process, Path(log.name), name="minio")
        yield endpoint
    finally:
        stop_child(process)
        log.close()


@pytest.fixture
def minio(minio_server: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Minio:
    """A fresh bucket, and the AWS variables an init container would get from a Secret."""
    bucket = "t-" + request.node.name.lower().replace("_", "-")[:50].strip("-")
    server = Minio(minio_server, bucket)
    server.client().create_bucket(Bucket=bucket)
    for name, value in {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": minio_server,
    }.items():
        monkeypatch.setenv(name, value)
    return server


def upload_dir(minio: Minio, model: Path, prefix: str) -> None:
    client = minio.client()
    for path in model.iterdir():
        client.upload_file(str(path), minio.bucket, f"{prefix}/{path.name}")


def test_prefix_is_fetched_and_verified(minio: Minio, model: Path, dest: Path, keys: Keys) -> None:
    upload_dir(minio, model, "iris/1.0.0")
    result, record = run_fetch(f"s3://{minio.bucket}/iris/1.0.0", dest, keys.public)
    assert_installed(result, record, dest, keys)
    assert record["source"] == f"s3://{minio.bucket}/iris/1.0.0"


def test_archive_with_signature_beside_it(minio: Minio, model: Path, dest: Path, keys: Keys, tmp_path: Path) -> None:
    archive = tar_gz(tmp_path / "1.0.0.tar.gz", {k: v for k, v in files_of(model).items() if k != "model.sig"})
    client = minio.client()
    client.upload_file(str(archive), minio.bucket, "iris/1.0.0.tar.gz")
    client.upload_file(str(model / "model.sig"), minio.bucket, "iris/1.0.0.tar.gz.sig")
    pin = signing.signed_digest(model / "model.sig")
    assert_installed(
        *run_fetch(f"s3://{minio.bucket}/iris/1.0.0.tar.gz", dest, keys.public, "--sha256", pin), dest, keys
    )


def test_tampered_object_is_refused(minio: Minio, model: Path, dest: Path, keys: Keys) -> None:
    flip_byte(model / "model.joblib")
    upload_dir(minio, model, "iris/1.0.0")
    result, record = run_fetch(f"s3://{minio.bucket}/iris/1.0.0", dest, keys.public)
    assert_refused(result, record, dest, "FilesDiffer")
    assert record["failedFiles"] == ["model.joblib"]


def test_missing_object(minio: Minio, dest: Path, keys: Keys) -> None:
    assert_refused(*run_fetch(f"s3://{minio.bucket}/iris/9.9.9.tar.gz", dest, keys.public), dest, "SourceNotFound")


def test_archive_without_signature(minio: Minio, model: Path, dest: Path, keys: Keys, tmp_path: Path) -> None:
    archive = tar_gz(tmp_path / "1.0.0.tar.gz", {k: v for k, v in files_of(model).items() if k != "model.sig"})
    minio.client().upload_file(str(archive), minio.bucket, "iris/1.0.0.tar.gz")
    result, record = run_fetch(f"s3://{minio.bucket}/iris/1.0.0.tar.gz", dest, keys.public)
    assert_refused(result, record, dest, "SignatureMissing")
    assert "1.0.0.tar.gz.sig" in record["message"]


def test_wrong_credentials(minio: Minio, model: Path, dest: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch) -> None:
    upload_dir(minio, model, "iris/1.0.0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    result, record = run_fetch(f"s3://{minio.bucket}/iris/1.0.0", dest, keys.public, "--timeout", "5")
    assert_refused(result, record, dest, "DownloadFailed")
    assert "SignatureDoesNotMatch" in record["message"] or "403" in record["message"]


def test_oversized_object(minio: Minio, model: Path, dest: Path, keys: Keys) -> None:
    upload_dir(minio, model, "iris/1.0.0")
    limit = (model / "model.joblib").stat().st_size // 2
    result, record = run_fetch(f"s3://{minio.bucket}/iris/1.0.0", dest, keys.public, "--max-bytes", str(limit))
    assert_refused(result, record, dest, "TooLarge")
