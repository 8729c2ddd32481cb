"""The built archives, for real: their configs, their contents, their names in containerd, and the images running."""

from __future__ import annotations

import email.parser
import json
import posixpath
import re
import subprocess
import tarfile
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.utils import canonicalize_name

from devcluster import images
from tests.dependency_sets.resolve import (
    FIRST_PARTY,
    GUARDRAILS_LIBRARIES,
    HARNESS_FILES,
    KUBERNETES_LIBRARIES,
    SERVING_LIBRARIES,
    closure,
    dependency_set,
)

# A cold cache builds every image inside the first test's fixture (about 10 minutes on 2 cores).
pytestmark = [pytest.mark.images, pytest.mark.slow, pytest.mark.timeout(2400)]


def _config(archive: Path) -> dict[str, Any]:
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config: dict[str, Any] = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
    return config


_SITE_PACKAGES = re.compile(r"venv/lib/python(?P<version>3\.\d+)/site-packages/(?P<top>[^/]+)")
_METADATA = re.compile(r"venv/lib/python3\.\d+/site-packages/[^/]+\.dist-info/METADATA")
# Each product image installs one set (Dockerfile: `requirements.py operator` / `server`).
IMAGE_SETS = {images.OPERATOR_IMAGE: "operator", images.SERVER_IMAGE: "server"}


@dataclass(frozen=True)
class Contents:
    """An image's merged filesystem (its layers applied in order, whiteouts honoured) and its venv's distributions."""

    paths: frozenset[str]
    python: str
    top_level: frozenset[str]
    requires: Mapping[str, list[str]]  # canonical distribution name -> its Requires-Dist lines


def _contents(archive: Path) -> Contents:
    """Read every layer of a docker archive, keeping the venv's METADATA files."""
    paths: set[str] = set()
    metadata: dict[str, bytes] = {}
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        for layer_name in manifest[0]["Layers"]:
            added: set[str] = set()
            with tarfile.open(fileobj=outer.extractfile(layer_name), mode="r:*") as layer:
                for member in layer:
                    path = posixpath.normpath(member.name.lstrip("/")).removeprefix("./")
                    head, base = posixpath.split(path)
                    if base == ".wh..wh..opq":  # the directory's lower contents are gone, not itself
                        paths -= {p for p in paths if p.startswith(head + "/")}
                    elif base.startswith(".wh."):
                        gone = posixpath.join(head, base.removeprefix(".wh."))
                        paths -= {p for p in paths if p == gone or p.startswith(gone + "/")}
                    else:
                        added.add(path)
                        if _METADATA.fullmatch(path) and (member.isfile() or member.islnk()):
                            metadata[path] = layer.extractfile(member).read()  # type: ignore[union-attr]
            paths |= added
    found = [m for p in paths if (m := _SITE_PACKAGES.fullmatch(p))]
    assert found, f"no /venv/lib/python3.*/site-packages in {archive}"
    requires: dict[str, list[str]] = {}
    for path, data in metadata.items():
        if path in paths:
            message = email.parser.BytesParser().parsebytes(data)
            requires[canonicalize_name(message["Name"])] = message.get_all("Requires-Dist") or []
    dist_infos = [m["top"] for m in found if m["top"].endswith(".dist-info")]
    assert len(dist_infos) == len(requires), f"a *.dist-info without METADATA in {archive}"
    return Contents(frozenset(paths), found[0]["version"], frozenset(m["top"] for m in found), requires)


@pytest.fixture(scope="module")
def contents(node_image_archives: dict[str, Path]) -> dict[str, Contents]:
    """The operator's and the server's contents (reading the server's layers takes a few seconds)."""
    return {reference: _contents(node_image_archives[reference]) for reference in IMAGE_SETS}


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
    wanted = {images.OPERATOR_IMAGE, images.SERVER_IMAGE, images.PAUSE_IMAGE, images.COREDNS_IMAGE}
    assert wanted <= set(node_image_archives)
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


@pytest.mark.parametrize("reference", sorted(IMAGE_SETS))
def test_product_image_installs_exactly_its_set(contents: dict[str, Contents], reference: str) -> None:
    """The venv holds the set and what it requires (per the image's own METADATA), and nothing else."""
    image = contents[reference]
    wanted = closure([*dependency_set(IMAGE_SETS[reference]), "modeldeploy"], image.requires.get,
                     {"python_version": image.python})
    installed = set(image.requires)
    assert installed == wanted, f"not in the set: {sorted(installed - wanted)}; missing: {sorted(wanted - installed)}"


def test_server_image_has_no_kubernetes_client(contents: dict[str, Contents]) -> None:
    server = contents[images.SERVER_IMAGE]
    assert {"fastapi", "scikit-learn", "onnxruntime", "model-signing", *GUARDRAILS_LIBRARIES} <= set(server.requires)
    assert not set(server.requires) & KUBERNETES_LIBRARIES
    assert not server.top_level & {"kopf", "kubernetes"}


def test_operator_image_verifies_signatures_but_has_no_serving_library(contents: dict[str, Contents]) -> None:
    operator = contents[images.OPERATOR_IMAGE]
    assert KUBERNETES_LIBRARIES | GUARDRAILS_LIBRARIES | {"model-signing"} <= set(operator.requires)
    assert not set(operator.requires) & SERVING_LIBRARIES
    assert not operator.top_level & {"sklearn", "onnxruntime", "fastapi", "starlette", "uvicorn", "numpy", "scipy"}


@pytest.mark.parametrize("reference", sorted(IMAGE_SETS))
def test_product_image_holds_the_packages_and_no_harness(contents: dict[str, Contents], reference: str) -> None:
    image = contents[reference]
    assert set(FIRST_PARTY) <= image.top_level and "modeldeploy" in image.requires
    assert not [p for p in image.paths if "devcluster" in p.split("/")]
    ours = [p for p in image.paths if (m := _SITE_PACKAGES.match(p)) and m["top"] in FIRST_PARTY]
    assert [p for p in ours if p.endswith(".py")], "no modules of the product packages"
    harness = [p for p in ours if posixpath.basename(p) in HARNESS_FILES or posixpath.basename(p).startswith("test_")]
    assert not harness and not [p for p in ours if "tests" in p.split("/")]
    assert not [p for p in image.paths if p == "src" or p.startswith("src/")], "the build's /src was copied"


def _commands(help_text: str) -> set[str]:
    """The command names a click ``--help`` lists under ``Commands:``."""
    return {line.split()[0] for line in help_text.partition("Commands:")[2].splitlines() if line.strip()}


def test_server_cli_lists_serving_and_fetching_but_not_the_operator(loaded: str) -> None:
    proc = _run(loaded, images.SERVER_IMAGE, "modeldeploy", "--help")
    assert proc.returncode == 0, proc.stderr
    commands = _commands(proc.stdout)
    assert {"serve", "fetch", "verify"} <= commands and "operator" not in commands


def test_operator_cli_lists_the_operator_and_the_signature_tools_but_not_serve(loaded: str) -> None:
    proc = _run(loaded, images.OPERATOR_IMAGE, "modeldeploy", "--help")
    assert proc.returncode == 0, proc.stderr
    # its admission webhook verifies signatures, so the `fetch` set (keygen, sign, verify, fetch) is there
    assert _commands(proc.stdout) == {"operator", "keygen", "sign", "verify", "fetch"}


def test_operator_image_imports_the_operator(loaded: str) -> None:
    """What `modeldeploy operator` imports once it runs (its --help imports neither kopf nor the handlers)."""
    code = "import kopf, model_operator.handlers, model_operator.kube, modeldeploy.guardrails; print('ok')"
    proc = _run(loaded, images.OPERATOR_IMAGE, "python", "-c", code)
    assert proc.stdout.strip() == "ok", proc.stderr


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
    code = "import model_server.app, sklearn.ensemble, onnxruntime, model_signing, cel_expr_python.cel, boto3; print('ok')"
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
