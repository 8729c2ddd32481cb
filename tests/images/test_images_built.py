"""The built archives, for real: their configs, their names in containerd, and the server image running."""

from __future__ import annotations

import json
import subprocess
import tarfile
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from devcluster import images

# A cold cache builds every image inside the first test's fixture (about 10 minutes on 2 cores).
pytestmark = [pytest.mark.images, pytest.mark.slow, pytest.mark.timeout(2400)]


def _config(archive: Path) -> dict[str, Any]:
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config: dict[str, Any] = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
    return config


def _ctr(address: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(images.ctr_command(address, *args), capture_output=True, text=True, timeout=300)


def _run(address: str, reference: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``ctr run`` as the image says (its USER), read-only rootfs, a tmpfs /tmp, no network."""
    return _ctr(
        address, "run", "--rm", "--read-only", "--mount", "type=tmpfs,src=tmpfs,dst=/tmp,options=rw:nosuid:nodev",
        images.normalize_reference(reference), f"t-{uuid.uuid4().hex[:8]}", *args,
    )


@pytest.fixture(scope="module")
def loaded(node_image_archives: dict[str, Path], throwaway_containerd: str) -> str:
    images.load_images(node_image_archives, throwaway_containerd)
    return throwaway_containerd


def test_every_node_image_is_built(node_image_archives: dict[str, Path]) -> None:
    assert {images.OPERATOR_IMAGE, images.SERVER_IMAGE, images.PAUSE_IMAGE, images.COREDNS_IMAGE} <= set(node_image_archives)
    assert any(ref.startswith(images.MINIO_REPOSITORY + ":") for ref in node_image_archives)


@pytest.mark.parametrize("reference", [images.OPERATOR_IMAGE, images.SERVER_IMAGE])
def test_product_images_run_modeldeploy_as_65532(node_image_archives: dict[str, Path], reference: str) -> None:
    config = _config(node_image_archives[reference])["config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["modeldeploy"]


def test_scratch_images_run_as_non_root(node_image_archives: dict[str, Path]) -> None:
    for reference, archive in node_image_archives.items():
        if reference not in images.PRODUCT_TARGETS:
            user = _config(archive)["config"]["User"]
            assert user and not user.startswith("0"), reference


def test_containerd_records_the_names_a_pod_resolves(loaded: str, node_image_archives: dict[str, Path]) -> None:
    names = set(_ctr(loaded, "images", "ls", "--quiet").stdout.split())
    assert {images.normalize_reference(ref) for ref in node_image_archives} <= names
    assert "docker.io/library/modeldeploy-server:0.1.0" in names


def test_loading_again_imports_nothing(loaded: str, node_image_archives: dict[str, Path]) -> None:
    assert images.load_images(node_image_archives, loaded) == []


def test_server_image_runs_modeldeploy_help_read_only_as_65532(loaded: str) -> None:
    proc = _run(loaded, images.SERVER_IMAGE, "modeldeploy", "--help")
    assert proc.returncode == 0, proc.stderr
    assert "serve" in proc.stdout
    uid = _run(loaded, images.SERVER_IMAGE, "python", "-c", "import os; print(os.getuid(), os.getgid())")
    assert uid.stdout.split() == ["65532", "65532"], uid.stderr


def test_server_image_imports_what_serving_needs(loaded: str) -> None:
    code = "import model_server.app, sklearn.ensemble, onnxruntime, model_signing, celpy, boto3; print('ok')"
    proc = _run(loaded, images.SERVER_IMAGE, "python", "-c", code)
    assert proc.stdout.strip() == "ok", proc.stderr


def test_operator_image_starts_its_cli(loaded: str) -> None:
    proc = _run(loaded, images.OPERATOR_IMAGE, "modeldeploy", "operator", "--help")
    assert proc.returncode == 0, proc.stderr


def test_coredns_binary_runs(loaded: str) -> None:
    proc = _run(loaded, images.COREDNS_IMAGE, "/coredns", "-version")
    assert proc.returncode == 0 and images.COREDNS_VERSION.lstrip("v") in proc.stdout, proc.stderr


def test_minio_serves_a_volume_as_non_root(loaded: str, node_image_archives: dict[str, Path], tmp_path: Path) -> None:
    reference = next(ref for ref in node_image_archives if ref.startswith(images.MINIO_REPOSITORY + ":"))
    data = tmp_path / "data"
    data.mkdir(mode=0o777)
    data.chmod(0o777)  # like an emptyDir
    name = f"t-{uuid.uuid4().hex[:8]}"
    cmd = images.ctr_command(
        loaded, "run", "--rm", "--read-only", "--mount", f"type=bind,src={data},dst=/data,options=rbind:rw",
        "--mount", "type=tmpfs,src=tmpfs,dst=/tmp,options=rw", images.normalize_reference(reference), name,
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = threading.Timer(60, lambda: _ctr(loaded, "task", "kill", "--signal", "SIGKILL", name))
    deadline.start()
    try:
        assert proc.stdout is not None
        first = next((line for line in proc.stdout if "MinIO Object Storage Server" in line or "FATAL" in line), "")
        assert "MinIO Object Storage Server" in first, first
        assert (data / ".minio.sys").stat().st_uid == images.NONROOT
    finally:
        deadline.cancel()
        _ctr(loaded, "task", "kill", "--signal", "SIGKILL", name)
        proc.wait(timeout=30)
