"""devcluster.images without building anything: references, cache keys, Dockerfile parsing, command lines."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from devcluster import images

ROOT = Path(__file__).resolve().parents[2]

DOCKERFILE = """\
# syntax=docker/dockerfile:1
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE} AS python
FROM python AS deps
COPY pyproject.toml ./
RUN pip install \\
    -r x
FROM python AS source
COPY pkg ./pkg
COPY README.md extra.txt ./
FROM deps AS venv
COPY --from=source /src /src
FROM python AS app
COPY --from=venv /venv /venv
FROM python AS other
COPY other ./other
"""


@pytest.mark.parametrize(
    ("reference", "normalised"),
    [
        ("modeldeploy-server:0.1.0", "docker.io/library/modeldeploy-server:0.1.0"),
        ("minio/minio:v1", "docker.io/minio/minio:v1"),
        ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
        ("registry.k8s.io/coredns/coredns:v1.15.0", "registry.k8s.io/coredns/coredns:v1.15.0"),
        ("localhost/base:x", "localhost/base:x"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("busybox", "docker.io/library/busybox:latest"),
    ],
)
def test_references_normalise_like_a_pod_image_field(reference: str, normalised: str) -> None:
    assert images.normalize_reference(reference) == normalised


def test_archive_names_are_path_safe_and_carry_the_key() -> None:
    assert images.archive_name("registry.k8s.io/pause:3.10", "abc") == "registry.k8s.io_pause_3.10-abc.tar"


def test_stage_closure_follows_from_and_copy_from() -> None:
    stages = images.parse_dockerfile(DOCKERFILE)
    assert images.stage_closure(stages, "app") == ["app", "deps", "python", "source", "venv"]
    assert images.target_sources(stages, "app") == ["README.md", "extra.txt", "pkg", "pyproject.toml"]
    assert images.target_sources(stages, "other") == ["other"]


def test_unknown_target_is_refused() -> None:
    with pytest.raises(ValueError, match="no stage"):
        images.stage_closure(images.parse_dockerfile(DOCKERFILE), "missing")


def test_project_dockerfile_targets_copy_the_packages() -> None:
    stages = images.parse_dockerfile((ROOT / "Dockerfile").read_text())
    for target in images.PRODUCT_TARGETS.values():
        sources = images.target_sources(stages, target)
        wanted = {"pyproject.toml", "scripts/requirements.py", "modeldeploy", "model_server", "model_operator"}
        assert wanted <= set(sources)


def test_project_context_keeps_the_requirements_script_and_no_harness() -> None:
    """What the project's .dockerignore lets a target copy: the packages and one script, no devcluster or tests."""
    rules = images.dockerignore_rules((ROOT / ".dockerignore").read_text())
    assert not images.is_ignored("scripts/requirements.py", rules)
    assert images.is_ignored("scripts/build-minio.sh", rules)
    assert images.is_ignored("devcluster/demo.py", rules) and images.is_ignored("tests/conftest.py", rules)
    stages = images.parse_dockerfile((ROOT / "Dockerfile").read_text())
    for target in images.PRODUCT_TARGETS.values():
        copied = [path for path, _ in images.context_files(ROOT, images.target_sources(stages, target), rules)]
        tops = {path.split("/")[0] for path in copied}
        assert tops == {"pyproject.toml", "README.md", "scripts", "modeldeploy", "model_operator", "model_server"}
        assert [p for p in copied if p.startswith("scripts/")] == ["scripts/requirements.py"]


def test_dockerignore_last_match_wins_and_parents_count() -> None:
    rules = images.dockerignore_rules("*\n!pkg/\n**/__pycache__\n**/*.pyc\n")
    assert images.is_ignored("tests/test_x.py", rules)
    assert not images.is_ignored("pkg/mod.py", rules)
    assert images.is_ignored("pkg/__pycache__/mod.cpython-311.pyc", rules)
    assert images.is_ignored("pkg/sub/x.pyc", rules)


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    shutil.copytree(ROOT, root, ignore=shutil.ignore_patterns(".venv", ".git", "build", "tests", "*.egg-info"))
    return root


def test_product_key_changes_when_a_copied_file_changes(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    before = {t: images.product_key(root, t, "base") for t in images.PRODUCT_TARGETS.values()}
    (root / "model_server" / "__init__.py").write_text("# changed\n", encoding="utf-8")
    after = {t: images.product_key(root, t, "base") for t in images.PRODUCT_TARGETS.values()}
    assert all(before[t] != after[t] for t in before)


def test_product_key_changes_when_the_requirements_script_changes(tmp_path: Path) -> None:
    """The requirements stage copies scripts/requirements.py: both images depend on it."""
    root = _tree(tmp_path)
    before = {t: images.product_key(root, t, "base") for t in images.PRODUCT_TARGETS.values()}
    script = root / "scripts" / "requirements.py"
    script.write_text(script.read_text() + "\n# changed\n")
    after = {t: images.product_key(root, t, "base") for t in images.PRODUCT_TARGETS.values()}
    assert all(before[t] != after[t] for t in before)


def test_product_key_ignores_files_outside_the_context(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    before = images.product_key(root, "model-server", "base")
    (root / "model_server" / "__pycache__").mkdir(exist_ok=True)
    (root / "model_server" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (root / "NOTES.md").write_text("not copied\n")
    assert images.product_key(root, "model-server", "base") == before


def test_product_key_differs_per_target_and_base(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    keys = {images.product_key(root, t, b) for t in ("operator", "model-server") for b in ("docker", "buildah")}
    assert len(keys) == 4


def test_base_key_depends_on_suite_and_package_set_only() -> None:
    key = images.base_key("bookworm", ["python3", "passwd"])
    assert key == images.base_key("bookworm", ["passwd", "python3"])
    assert key != images.base_key("trixie", ["python3", "passwd"])
    assert key != images.base_key("bookworm", ["python3"])


def test_bud_keeps_state_under_the_cache_and_reaches_pypi(tmp_path: Path) -> None:
    storage = images.Storage(tmp_path / "s", "vfs")
    cmd = images.bud_command(storage, Path("/src"), "model-server", "docker.io/library/m:1", "localhost/b:1")
    state = ["--root", f"{tmp_path}/s/root", "--runroot", f"{tmp_path}/s/run"]
    assert cmd[:7] == ["buildah", "--storage-driver", "vfs", *state]
    assert ["--target", "model-server"] == cmd[cmd.index("--target"):cmd.index("--target") + 2]
    assert "PYTHON_IMAGE=localhost/b:1" in cmd
    assert "/etc/ssl/certs:/etc/ssl/certs:ro" in cmd
    assert "--layers" in cmd and "--pull=never" in cmd


def test_ctr_import_targets_the_given_socket_and_the_cri_namespace() -> None:
    cmd = images.ctr_import_command("/tmp/c.sock", Path("/a.tar"), "native")
    assert cmd == [
        "ctr", "--address", "/tmp/c.sock", "--namespace", "k8s.io",
        "images", "import", "--snapshotter", "native", "/a.tar",
    ]


def test_parse_image_labels_reads_ctr_images_ls() -> None:
    out = (
        "REF TYPE DIGEST SIZE PLATFORMS LABELS\n"
        "docker.io/library/a:1 application/vnd.docker.distribution.manifest.v2+json sha256:ab 10.0 MiB linux/amd64 "
        "io.cri-containerd.image=managed,modeldeploy.io/archive.native=a-1.tar\n"
        "registry.k8s.io/pause:3.10 application/vnd.docker.distribution.manifest.v2+json sha256:cd 1.0 KiB "
        "linux/amd64 -\n"
    )
    labels = images.parse_image_labels(out)
    assert labels["docker.io/library/a:1"][images.loaded_label("native")] == "a-1.tar"
    assert labels["registry.k8s.io/pause:3.10"] == {}


def test_minio_version_comes_from_the_build_script() -> None:
    script = (ROOT / "scripts" / "build-minio.sh").read_text()
    assert images.minio_version(script).startswith("v0.0.0-")


def test_scratch_archive_is_a_docker_archive_with_the_config(tmp_path: Path) -> None:
    layer, archive = tmp_path / "layer.tar", tmp_path / "img.tar"
    images.write_layer(layer, images.scratch_entries([images.FileEntry("bin", 0o755, b"#!")]))
    images.write_docker_archive(archive, "registry.k8s.io/pause:3.10", images.ImageConfig(entrypoint=("/bin",)), layer)
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(tar.extractfile(manifest[0]["Config"]))  # type: ignore[arg-type]
        with tarfile.open(fileobj=tar.extractfile(manifest[0]["Layers"][0])) as inner:
            members = {m.name: m for m in inner.getmembers()}
    assert manifest[0]["RepoTags"] == ["registry.k8s.io/pause:3.10"]
    assert config["config"]["User"] == "65532:65532"
    assert config["config"]["Entrypoint"] == ["/bin"]
    assert members["tmp"].mode == 0o1777
    assert members["home/nonroot"].uid == images.NONROOT


def test_scratch_layers_are_reproducible(tmp_path: Path) -> None:
    entries = images.scratch_entries([images.FileEntry("x", 0o644, b"x")])
    images.write_layer(tmp_path / "a.tar", entries)
    images.write_layer(tmp_path / "b.tar", entries)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_pause_is_compiled_static() -> None:
    cmd = images.pause_compile_command(Path("pause.c"), Path("out"))
    assert cmd[0] == "gcc" and "-static" in cmd and "-DVERSION=v3.10-modeldeploy" in cmd


def test_parse_ldd_keeps_the_library_paths() -> None:
    out = (
        "\tlinux-vdso.so.1 (0x00007ff776dc1000)\n"
        "\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007ff776b7a000)\n"
        "\t/lib64/ld-linux-x86-64.so.2 (0x00007ff776dc3000)\n"
    )
    assert images.parse_ldd(out) == ["/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]
    assert images.parse_ldd("\tnot a dynamic executable\n") == []


def test_a_static_binary_needs_no_libraries() -> None:
    entries = images.binary_entries(Path("/nonexistent-static-binary"), "x")
    assert [e.path for e in entries] == ["x"]


def test_devcluster_exports_the_image_entry_points() -> None:
    import devcluster

    assert {"ensure_images", "load_images", "ImageError"} <= set(devcluster.__all__)


def test_docker_path_builds_the_same_target_and_saves_an_archive() -> None:
    assert images.docker_build_command(Path("/src"), "operator", "modeldeploy-operator:0.1.0") == [
        "docker", "build", "--target", "operator", "-t", "modeldeploy-operator:0.1.0", "/src",
    ]
    assert images.docker_save_command("x:1", Path("/a.tar")) == ["docker", "save", "-o", "/a.tar", "x:1"]


def test_push_writes_only_the_normalised_name(tmp_path: Path) -> None:
    cmd = images.buildah_push_command(images.Storage(tmp_path), "docker.io/library/m:1", Path("/a.tar"))
    assert cmd[-3:] == ["push", "docker.io/library/m:1", "docker-archive:/a.tar:docker.io/library/m:1"]
