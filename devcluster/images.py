"""Build, cache and load the container images the node runs, without a Docker engine.

Owns the image references, the cache layout under ``cache_root()/images`` and the command lines
of ``debootstrap``, ``buildah``, ``docker`` and ``ctr``:

- ``modeldeploy-operator`` and ``modeldeploy-server`` come from the project's Dockerfile (its
  ``operator`` and ``model-server`` targets): ``docker build`` where a Docker engine answers,
  otherwise ``buildah bud`` (overlay driver where the kernel allows, else vfs) on a
  ``python:3.11-slim-bookworm``-compatible base that debootstrap
  makes from Debian's packages. Each archive is keyed by a hash of its build context, so an
  unchanged tree reuses it and any change to a copied file rebuilds it.
- ``pause``, ``coredns`` and ``minio`` are single static binaries (built here with gcc and Go)
  in scratch images written directly as docker archives.

Every image is cached as a ``docker-archive`` tar (what ``docker save`` writes): ``ctr images
import`` names it after the archive's ``RepoTags``, normalised the way a Pod's ``image:`` is
(``modeldeploy-server:0.1.0`` -> ``docker.io/library/modeldeploy-server:0.1.0``). An
``oci-archive`` would not do: ctr 1.6 records its ``org.opencontainers.image.ref.name``
verbatim (``modeldeploy-server:0.1.0``, a name no Pod resolves to) and imports an archive
without that annotation under no name at all.

This module never touches the machine's default containerd or ``/var/lib/containers``: buildah
keeps its state under the cache and ``load_images`` talks only to the socket it is given.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devcluster import build

logger = logging.getLogger(__name__)

IMAGE_TAG = "0.1.0"
OPERATOR_IMAGE = f"modeldeploy-operator:{IMAGE_TAG}"
SERVER_IMAGE = f"modeldeploy-server:{IMAGE_TAG}"
PRODUCT_TARGETS: Mapping[str, str] = {OPERATOR_IMAGE: "operator", SERVER_IMAGE: "model-server"}

PAUSE_VERSION = "3.10"
PAUSE_IMAGE = f"registry.k8s.io/pause:{PAUSE_VERSION}"
COREDNS_VERSION = "v1.15.0"
COREDNS_PACKAGE = "github.com/coredns/coredns"
COREDNS_IMAGE = f"registry.k8s.io/coredns/coredns:{COREDNS_VERSION}"
MINIO_REPOSITORY = "modeldeploy-minio"

DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
BASE_PACKAGES = ("ca-certificates", "passwd", "python-is-python3", "python3", "python3-venv")
BASE_REPOSITORY = "localhost/modeldeploy-python"
NONROOT = 65532
# The buildah state is dropped (and the next build is cold) once it grows past this.
STORAGE_LIMIT_BYTES = 40 * 1024**3
# Archives kept per image: one per recent source tree (worktrees share the cache).
KEEP_ARCHIVES = 3
_LOADED_LABEL = "modeldeploy.io/archive"
_MINIO_PIN = re.compile(r'MINIO_VERSION:-(v[\w.+-]+)\}')
_REFERENCE_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class ImageError(RuntimeError):
    """A build or load step failed; the message names the step and its log."""


# --- Pure: references, keys, Dockerfile and .dockerignore ------------------------------------


def normalize_reference(reference: str) -> str:
    """The name containerd (and a Pod's ``image:``) resolves ``reference`` to.

    ``modeldeploy-server:0.1.0`` -> ``docker.io/library/modeldeploy-server:0.1.0``;
    ``registry.k8s.io/pause:3.10`` stays; a missing tag becomes ``:latest``.
    """
    name, _, digest = reference.partition("@")
    first, slash, _rest = name.partition("/")
    if not slash:
        name = f"docker.io/library/{name}"
    elif not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}"
    if not digest and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return f"{name}@{digest}" if digest else name


def archive_name(reference: str, key: str) -> str:
    """``registry.k8s.io/pause:3.10`` + key -> ``registry.k8s.io_pause_3.10-<key>.tar``."""
    return f"{_REFERENCE_SAFE.sub('_', reference.replace('/', '_').replace(':', '_'))}-{key}.tar"


def digest_of(parts: Iterable[str]) -> str:
    """A short stable hash of the given strings (cache keys)."""
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part.encode())
        sha.update(b"\0")
    return sha.hexdigest()[:16]


def base_key(suite: str, packages: Sequence[str], mirror: str = DEBIAN_MIRROR) -> str:
    """The cache key of the debootstrap base: suite, mirror and the sorted package list."""
    return digest_of([suite, mirror, *sorted(packages)])


def base_reference(suite: str, key: str) -> str:
    """The base's image name in buildah's storage, e.g. ``localhost/modeldeploy-python:bookworm-<key>``."""
    return f"{BASE_REPOSITORY}:{suite}-{key}"


def minio_version(script: str) -> str:
    """The MinIO version pinned in ``scripts/build-minio.sh`` (its ``MINIO_VERSION`` default)."""
    match = _MINIO_PIN.search(script)
    if not match:
        raise ValueError("no MINIO_VERSION default found in build-minio.sh")
    return match.group(1)


@dataclass(frozen=True)
class Stage:
    """One ``FROM ... AS name`` stage: what it starts from and what it copies."""

    name: str
    base: str
    sources: tuple[str, ...] = ()
    from_stages: tuple[str, ...] = ()


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of a Dockerfile, with continuation lines joined."""
    logical = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        keyword, _, rest = logical.partition(" ")
        yield keyword.upper(), rest.strip()
        logical = ""


def parse_dockerfile(text: str) -> dict[str, Stage]:
    """The named stages of a Dockerfile with their context sources (``COPY`` without ``--from``)."""
    stages: dict[str, Stage] = {}
    current: Stage | None = None
    for keyword, rest in _instructions(text):
        if keyword == "FROM":
            plain = [w for w in rest.split() if not w.startswith("--")]
            name = plain[2] if len(plain) >= 3 and plain[1].upper() == "AS" else str(len(stages))
            current = Stage(name=name, base=plain[0])
            stages[name] = current
        elif keyword in ("COPY", "ADD") and current is not None:
            words = rest.split()
            flags = [w for w in words if w.startswith("--")]
            args = [w for w in words if not w.startswith("--")]
            source_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            if source_stage is not None:
                current = Stage(current.name, current.base, current.sources, (*current.from_stages, source_stage))
            else:
                current = Stage(current.name, current.base, (*current.sources, *args[:-1]), current.from_stages)
            stages[current.name] = current
    return stages


def stage_closure(stages: Mapping[str, Stage], target: str) -> list[str]:
    """``target`` and every stage it is built from (``FROM stage`` or ``COPY --from=stage``), sorted."""
    if target not in stages:
        raise ValueError(f"no stage {target!r} in the Dockerfile")
    seen: set[str] = set()
    todo = [target]
    while todo:
        name = todo.pop()
        if name in seen or name not in stages:
            continue
        seen.add(name)
        todo += [stages[name].base, *stages[name].from_stages]
    return sorted(seen)


def target_sources(stages: Mapping[str, Stage], target: str) -> list[str]:
    """The build-context paths (files or directories) that ``target`` copies, sorted."""
    return sorted({src.rstrip("/") for name in stage_closure(stages, target) for src in stages[name].sources})


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A ``.dockerignore`` pattern as a regex over ``/``-separated paths (``**``, ``*``, ``?``)."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignore_rules(text: str) -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes?, regex) rules of a ``.dockerignore``, in order (the last match wins)."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((not negate, _pattern_regex(pattern)))
    return rules


def is_ignored(path: str, rules: Sequence[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves ``path`` out of the context: a rule matches it or one of its parents."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for excludes, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            ignored = excludes
    return ignored


def context_key(dockerfile: str, target: str, base: str, files: Iterable[tuple[str, str]]) -> str:
    """The cache key of one target's archive.

    Args:
        dockerfile: the Dockerfile's text.
        target: the stage built.
        base: what ``PYTHON_IMAGE`` is (and which builder), so both paths get their own archive.
        files: (context-relative path, sha256 of content and mode) for every copied file.
    """
    return digest_of([dockerfile, target, base, *(f"{path}={sha}" for path, sha in sorted(files))])


# --- Pure: command lines -----------------------------------------------------------------------


def debootstrap_command(suite: str, packages: Sequence[str], rootfs: Path, mirror: str = DEBIAN_MIRROR) -> list[str]:
    """The minbase debootstrap of ``suite`` with ``packages`` into ``rootfs``."""
    return ["debootstrap", "--variant=minbase", f"--include={','.join(sorted(packages))}", suite, str(rootfs), mirror]


@dataclass(frozen=True)
class Storage:
    """buildah's state: a directory of ours (never /var/lib/containers) and its storage driver."""

    root: Path
    driver: str = "vfs"


def buildah_command(storage: Storage, *args: str) -> list[str]:
    """``buildah`` on ``storage``'s driver with its state under ``storage.root``."""
    return [
        "buildah", "--storage-driver", storage.driver,
        "--root", str(storage.root / "root"), "--runroot", str(storage.root / "run"), *args,
    ]


def bud_command(storage: Storage, context: Path, target: str, reference: str, base_image: str) -> list[str]:
    """``buildah bud`` of one Dockerfile target, reusing cached layers, reaching PyPI through the host's CAs."""
    return buildah_command(
        storage, "bud", "--layers", "--pull=never", "--network", "host",
        "-v", "/etc/ssl/certs:/etc/ssl/certs:ro",
        "--build-arg", f"PYTHON_IMAGE={base_image}",
        "--target", target, "-t", reference, "-f", str(context / "Dockerfile"), str(context),
    )


def buildah_push_command(storage: Storage, name: str, archive: Path) -> list[str]:
    """Write image ``name`` from buildah's storage as a docker archive tagged ``name`` only.

    ``name`` is the normalised reference the build was tagged with: buildah writes every name
    the image has into ``RepoTags``, and a short ``-t x:1`` would add ``localhost/x:1``.
    """
    return buildah_command(storage, "push", name, f"docker-archive:{archive}:{name}")


def docker_build_command(context: Path, target: str, reference: str) -> list[str]:
    """``docker build`` of one Dockerfile target (its default ``PYTHON_IMAGE``)."""
    return ["docker", "build", "--target", target, "-t", reference, str(context)]


def docker_save_command(reference: str, archive: Path) -> list[str]:
    return ["docker", "save", "-o", str(archive), reference]


def ctr_command(address: str, *args: str) -> list[str]:
    """``ctr`` against one containerd socket, in the CRI's ``k8s.io`` namespace."""
    return ["ctr", "--address", address, "--namespace", "k8s.io", *args]


def ctr_import_command(address: str, archive: Path, snapshotter: str) -> list[str]:
    """Import (and unpack for ``snapshotter``) one archive, as ``kind load docker-image`` does."""
    return ctr_command(address, "images", "import", "--snapshotter", snapshotter, str(archive))


def loaded_label(snapshotter: str) -> str:
    """The image label recording which archive was imported and unpacked for ``snapshotter``."""
    return f"{_LOADED_LABEL}.{snapshotter}"


def parse_image_labels(ls_output: str) -> dict[str, dict[str, str]]:
    """``ctr images ls`` output -> {reference: labels}."""
    images: dict[str, dict[str, str]] = {}
    for line in ls_output.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 2:
            continue
        labels: dict[str, str] = {}
        if cols[-1] != "-" and "=" in cols[-1]:
            for pair in cols[-1].split(","):
                key, _, value = pair.partition("=")
                labels[key] = value
        images[cols[0]] = labels
    return images


def go_arch(machine: str | None = None) -> str:
    """The OCI architecture of this machine (``x86_64`` -> ``amd64``)."""
    machine = machine or platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(machine, machine)


def parse_ldd(output: str) -> list[str]:
    """The absolute library paths ``ldd`` lists (``libc.so.6 => /lib/...``, ``/lib64/ld-linux...``)."""
    paths: list[str] = []
    for line in output.splitlines():
        target = line.split("=>", 1)[-1].strip().split(" (", 1)[0].strip()
        if target.startswith("/"):
            paths.append(target)
    return paths


# --- Pure: scratch images as docker archives ---------------------------------------------------


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an image config a scratch image sets."""

    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...] = ()
    user: str = f"{NONROOT}:{NONROOT}"
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    exposed_ports: tuple[str, ...] = ()
    workdir: str = "/"


@dataclass(frozen=True)
class FileEntry:
    """One path of a scratch image's single layer; ``content`` None makes a directory."""

    path: str
    mode: int = 0o755
    content: bytes | Path | None = None
    uid: int = 0
    gid: int = 0


def scratch_entries(extra: Sequence[FileEntry] = ()) -> list[FileEntry]:
    """The common filesystem of the scratch images, then ``extra``.

    passwd/group with ``nonroot``, an /etc/hosts naming localhost (a kubelet mounts its own over
    it; ``ctr run`` does not), a world-writable /tmp.
    """
    passwd = f"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT}:{NONROOT}:nonroot:/home/nonroot:/sbin/nologin\n"
    group = f"root:x:0:\nnonroot:x:{NONROOT}:\n"
    return [
        FileEntry("etc"),
        FileEntry("etc/passwd", 0o644, passwd.encode()),
        FileEntry("etc/group", 0o644, group.encode()),
        FileEntry("etc/hosts", 0o644, b"127.0.0.1 localhost\n::1 localhost\n"),
        FileEntry("home"),
        FileEntry("home/nonroot", 0o700, uid=NONROOT, gid=NONROOT),
        FileEntry("tmp", 0o1777),
        *extra,
    ]


def image_config(config: ImageConfig, diff_ids: Sequence[str], arch: str, created: str) -> dict[str, object]:
    """The image config JSON (``application/vnd.docker.container.image.v1+json`` / OCI)."""
    body: dict[str, object] = {"Env": list(config.env), "Entrypoint": list(config.entrypoint), "WorkingDir": config.workdir}
    if config.cmd:
        body["Cmd"] = list(config.cmd)
    if config.user:
        body["User"] = config.user
    if config.exposed_ports:
        body["ExposedPorts"] = {port: {} for port in config.exposed_ports}
    return {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": body,
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created": created, "created_by": "devcluster.images"} for _ in diff_ids],
    }


def docker_archive_manifest(reference: str, config_file: str, layer_files: Sequence[str]) -> list[dict[str, object]]:
    """``manifest.json`` of a docker archive: one image, tagged ``reference``."""
    return [{"Config": config_file, "RepoTags": [reference], "Layers": list(layer_files)}]


# --- I/O: small helpers ------------------------------------------------------------------------


def images_dir() -> Path:
    """``cache_root()/images``: the base, buildah's state, the archives and the binaries."""
    return build.cache_root() / "images"


def project_root() -> Path:
    return Path(__file__).resolve().parent.parent


def _run(cmd: Sequence[str], log: Path, cwd: Path | None = None) -> None:
    """Run ``cmd``, appending its output to ``log``; raise ``ImageError`` naming both on failure."""
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("a") as sink:
        sink.write(f"$ {' '.join(cmd)}\n")
        sink.flush()
        proc = subprocess.run(list(cmd), cwd=cwd, stdout=sink, stderr=subprocess.STDOUT)
        sink.write(f"# exit {proc.returncode} after {time.monotonic() - started:.0f}s\n")
    if proc.returncode != 0:
        raise ImageError(f"{cmd[0]} {cmd[1] if len(cmd) > 1 else ''} failed (exit {proc.returncode}); see {log}")


def _replace(partial: Path, final: Path) -> None:
    """Move a finished ``partial`` file onto ``final`` atomically."""
    os.replace(partial, final)


def _sha256_file(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            sha.update(chunk)
    return sha.hexdigest()


def docker_engine_available() -> bool:
    """Whether ``docker info`` answers (a Docker engine, not only the client)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def write_docker_archive(archive: Path, reference: str, config: ImageConfig, layer: Path, created: str = "1970-01-01T00:00:00Z") -> None:
    """Write a one-layer docker archive (what ``docker save`` makes) from an uncompressed layer tar."""
    diff_id = f"sha256:{_sha256_file(layer)}"
    config_json = json.dumps(image_config(config, [diff_id], go_arch(), created), sort_keys=True).encode()
    config_file = f"{hashlib.sha256(config_json).hexdigest()}.json"
    layer_file = f"{diff_id.removeprefix('sha256:')}/layer.tar"
    manifest = json.dumps(docker_archive_manifest(reference, config_file, [layer_file])).encode()
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as out:
        out.add(layer, arcname=layer_file)
        for name, data in ((config_file, config_json), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            out.addfile(info, io.BytesIO(data))
    _replace(partial, archive)


def write_layer(layer: Path, entries: Sequence[FileEntry]) -> None:
    """Write ``entries`` as a reproducible layer tar (mtime 0, numeric owners)."""
    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as out:
        for entry in entries:
            info = tarfile.TarInfo(entry.path)
            info.mode, info.uid, info.gid, info.mtime = entry.mode, entry.uid, entry.gid, 0
            if entry.content is None:
                info.type = tarfile.DIRTYPE
                out.addfile(info)
                continue
            data = entry.content.read_bytes() if isinstance(entry.content, Path) else entry.content
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


def _entries_key(reference: str, config: ImageConfig, entries: Sequence[FileEntry]) -> str:
    """The cache key of a scratch image: its name, config and every entry's content."""
    parts = [reference, repr(config)]
    for entry in entries:
        if isinstance(entry.content, Path):
            content = _sha256_file(entry.content)
        elif entry.content is None:
            content = "dir"
        else:
            content = hashlib.sha256(entry.content).hexdigest()
        parts.append(f"{entry.path}:{entry.mode:o}:{entry.uid}:{entry.gid}:{content}")
    return digest_of(parts)


def ensure_scratch_image(reference: str, config: ImageConfig, entries: Sequence[FileEntry]) -> Path:
    """The docker archive of a scratch image, written once per content key."""
    archive = images_dir() / "archives" / archive_name(reference, _entries_key(reference, config, entries))
    if archive.exists():
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=archive.parent) as tmp:
        layer = Path(tmp) / "layer.tar"
        write_layer(layer, entries)
        write_docker_archive(archive, reference, config, layer)
    _drop_older(archive)
    return archive


def _drop_older(archive: Path, keep: int = KEEP_ARCHIVES) -> None:
    """Keep the ``keep`` newest archives of one image (several worktrees share the cache)."""
    stem = archive.name.rsplit("-", 1)[0]
    same = [p for p in archive.parent.glob(f"{stem}-*.tar") if p.name.rsplit("-", 1)[0] == stem]
    for old in sorted(same, key=lambda p: p.stat().st_mtime, reverse=True)[keep:]:
        if old != archive:
            old.unlink(missing_ok=True)


# --- I/O: the debootstrap base -----------------------------------------------------------------

_BASE_PRUNE = ("var/cache/apt", "var/lib/apt/lists", "var/log", "usr/share/doc", "usr/share/man", "usr/share/info")


def _prune_rootfs(rootfs: Path) -> None:
    """Drop what an image does not need: apt caches and lists, logs, docs, device nodes."""
    for rel in (*_BASE_PRUNE, "dev", "proc", "sys", "run", "tmp"):
        target = rootfs / rel
        if target.is_dir():
            for child in target.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()


def _tar_rootfs(rootfs: Path, layer: Path) -> None:
    """Tar a whole root filesystem with numeric owners (names are the host's, not the image's)."""

    def numeric(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uname = info.gname = ""
        return info

    with tarfile.open(layer, "w", format=tarfile.PAX_FORMAT) as out:
        for child in sorted(rootfs.iterdir()):
            out.add(child, arcname=child.name, filter=numeric)


def ensure_base(suite: str = DEBIAN_SUITE, packages: Sequence[str] = BASE_PACKAGES) -> tuple[str, Path]:
    """The debootstrap base image: (its reference, its docker archive), made once per key."""
    key = base_key(suite, packages)
    reference = base_reference(suite, key)
    directory = images_dir() / f"base-{suite}-{key}"
    archive = directory / "base.tar"
    if archive.exists():
        return reference, archive
    directory.mkdir(parents=True, exist_ok=True)
    rootfs = directory / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    started = time.monotonic()
    logger.info("images: debootstrap %s (%s) into %s", suite, ", ".join(packages), rootfs)
    _run(debootstrap_command(suite, packages, rootfs), directory / "debootstrap.log")
    _prune_rootfs(rootfs)
    layer = directory / "layer.tar"
    _tar_rootfs(rootfs, layer)
    write_docker_archive(archive, reference, ImageConfig(entrypoint=(), cmd=("python3",), user=""), layer)
    layer.unlink()
    shutil.rmtree(rootfs)
    logger.info("images: base %s ready in %.0fs", reference, time.monotonic() - started)
    return reference, archive


# --- I/O: the product images from the Dockerfile -----------------------------------------------


def _file_digest(path: Path) -> str:
    return f"{_sha256_file(path)}:{path.stat().st_mode & 0o777:o}"


def context_files(root: Path, sources: Sequence[str], rules: Sequence[tuple[bool, re.Pattern[str]]]) -> list[tuple[str, str]]:
    """(relative path, digest) of every file under ``sources`` that the context keeps."""
    found: list[tuple[str, str]] = []
    for source in sources:
        top = root / source
        paths = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in paths:
            rel = path.relative_to(root).as_posix()
            if not is_ignored(rel, rules):
                found.append((rel, _file_digest(path)))
    return found


def product_key(root: Path, target: str, base: str) -> str:
    """The cache key of one Dockerfile target built on ``base`` from the tree at ``root``."""
    dockerfile = (root / "Dockerfile").read_text()
    ignore = root / ".dockerignore"
    rules = dockerignore_rules(ignore.read_text()) if ignore.exists() else []
    sources = target_sources(parse_dockerfile(dockerfile), target)
    return context_key(dockerfile, target, base, context_files(root, sources, rules))


def _overlay_works(directory: Path) -> bool:
    """Whether the kernel mounts an overlay here (not, e.g., when ``directory`` is on an overlay itself)."""
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        lower, upper, work, merged = (Path(tmp) / name for name in ("lower", "upper", "work", "merged"))
        for path in (lower, upper, work, merged):
            path.mkdir()
        options = f"lowerdir={lower},upperdir={upper},workdir={work}"
        if subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)], capture_output=True).returncode:
            return False
        subprocess.run(["umount", str(merged)], capture_output=True)
        return True


def buildah_storage() -> Storage:
    """buildah's state under the cache: overlay where the kernel allows it, else vfs.

    vfs copies the whole filesystem for every layer it commits, which makes each cached step of
    the Dockerfile cost tens of seconds; overlay commits only the changes.
    ``$MODELDEPLOY_BUILDAH_DRIVER`` forces one.
    """
    driver = os.environ.get("MODELDEPLOY_BUILDAH_DRIVER")
    if not driver:
        driver = "overlay" if os.geteuid() == 0 and _overlay_works(images_dir() / "probe") else "vfs"
    return Storage(images_dir() / f"buildah-{driver}", driver)


def _trim_storage(storage: Storage, limit: int = STORAGE_LIMIT_BYTES) -> None:
    """Drop buildah's state when it outgrows ``limit`` (the next build is cold)."""
    if not storage.root.exists():
        return
    out = subprocess.run(["du", "-sxb", str(storage.root)], capture_output=True, text=True).stdout.split()
    if out and int(out[0]) > limit:
        logger.info("images: buildah storage is %.1f GB, dropping it", int(out[0]) / 1024**3)
        subprocess.run(buildah_command(storage, "rm", "--all"), capture_output=True)
        subprocess.run(buildah_command(storage, "rmi", "--all", "--force"), capture_output=True)
        shutil.rmtree(storage.root, ignore_errors=True)


def _buildah_has_image(storage: Storage, reference: str) -> bool:
    cmd = buildah_command(storage, "inspect", "--type", "image", reference)
    return subprocess.run(cmd, capture_output=True).returncode == 0


def _build_with_buildah(root: Path, targets: Mapping[str, str], archives: Mapping[str, Path]) -> None:
    """Build the given (reference -> target) with buildah on the debootstrap base into ``archives``."""
    storage = buildah_storage()
    log = images_dir() / "buildah.log"
    _trim_storage(storage)
    base, base_archive = ensure_base()
    if not _buildah_has_image(storage, base):
        _run(buildah_command(storage, "pull", f"docker-archive:{base_archive}"), log)
    for reference, target in targets.items():
        started = time.monotonic()
        logger.info("images: buildah bud --target %s (log %s)", target, log)
        name = normalize_reference(reference)
        _run(bud_command(storage, root, target, name, base), log, cwd=root)
        partial = archives[reference].with_name(archives[reference].name + ".partial")
        partial.unlink(missing_ok=True)
        _run(buildah_push_command(storage, name, partial), log)
        _replace(partial, archives[reference])
        logger.info("images: %s built in %.0fs", reference, time.monotonic() - started)


def _build_with_docker(root: Path, targets: Mapping[str, str], archives: Mapping[str, Path]) -> None:
    """Build the given (reference -> target) with ``docker build`` and save them into ``archives``."""
    log = images_dir() / "docker.log"
    for reference, target in targets.items():
        _run(docker_build_command(root, target, reference), log, cwd=root)
        partial = archives[reference].with_name(archives[reference].name + ".partial")
        _run(docker_save_command(reference, partial), log)
        _replace(partial, archives[reference])


def ensure_product_images(root: Path | None = None, use_docker: bool | None = None) -> dict[str, Path]:
    """The operator and server archives for the tree at ``root``, rebuilt only when their context changed.

    Not locked: call it through ``ensure_images``.

    Args:
        root: the source tree (default: this checkout).
        use_docker: build with ``docker build`` (default: when ``docker info`` answers).
    """
    root = root or project_root()
    use_docker = docker_engine_available() if use_docker is None else use_docker
    base = "docker:default" if use_docker else base_reference(DEBIAN_SUITE, base_key(DEBIAN_SUITE, BASE_PACKAGES))
    archives = {
        ref: images_dir() / "archives" / archive_name(ref, product_key(root, target, base))
        for ref, target in PRODUCT_TARGETS.items()
    }
    missing = {ref: PRODUCT_TARGETS[ref] for ref, path in archives.items() if not path.exists()}
    if missing:
        (images_dir() / "archives").mkdir(parents=True, exist_ok=True)
        (_build_with_docker if use_docker else _build_with_buildah)(root, missing, archives)
        for ref in missing:
            _drop_older(archives[ref])
    return archives


# --- I/O: pause, CoreDNS, MinIO ----------------------------------------------------------------


def kubernetes_source(version: str = build.K8S_VERSION) -> Path:
    """The ``k8s.io/kubernetes`` module directory in the Go module cache (downloaded if missing)."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "go.mod").write_text("module probe\n")
        proc = subprocess.run(
            ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
            cwd=tmp, capture_output=True, text=True,
        )
    if proc.returncode != 0:
        raise ImageError(f"go mod download k8s.io/kubernetes@{version} failed: {proc.stderr.strip()}")
    return Path(json.loads(proc.stdout)["Dir"])


def pause_compile_command(source: Path, output: Path, version: str = PAUSE_VERSION) -> list[str]:
    """``gcc -static`` of Kubernetes' ``build/pause/linux/pause.c``, as its Makefile does."""
    return ["gcc", "-Os", "-Wall", "-Werror", "-static", "-s", f"-DVERSION=v{version}-modeldeploy", "-o", str(output), str(source)]


def ensure_pause_binary() -> Path:
    """The static ``pause`` binary, compiled once from the Kubernetes module source."""
    directory = images_dir() / f"pause-{PAUSE_VERSION}"
    binary = directory / "pause"
    if binary.exists():
        return binary
    directory.mkdir(parents=True, exist_ok=True)
    source = kubernetes_source() / "build" / "pause" / "linux" / "pause.c"
    partial = directory / "pause.partial"
    _run(pause_compile_command(source, partial), directory / "build.log")
    _replace(partial, binary)
    return binary


def ensure_coredns_binary(version: str = COREDNS_VERSION) -> Path:
    """The static ``coredns`` binary, built once from the Go module proxy (like etcd)."""
    return build.build_tool(build.cache_root() / f"coredns-{version}", COREDNS_PACKAGE, version, COREDNS_PACKAGE, "coredns")


def ensure_minio_binary(root: Path | None = None) -> tuple[str, Path]:
    """(version, path) of the MinIO binary ``scripts/build-minio.sh`` builds or reuses."""
    script = (root or project_root()) / "scripts" / "build-minio.sh"
    proc = subprocess.run([str(script)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"{script} failed: {proc.stderr.strip()[-2000:]}")
    binary = Path(proc.stdout.strip().splitlines()[-1])
    return binary.parent.name.removeprefix("minio-"), binary


def binary_entries(binary: Path, name: str) -> list[FileEntry]:
    """``binary`` at ``/name`` plus, when it is dynamically linked, the libraries ``ldd`` names."""
    entries = [FileEntry(name, 0o755, binary)]
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True)
    libraries = parse_ldd(proc.stdout) if proc.returncode == 0 else []
    directories = sorted({str(Path(lib).parent).lstrip("/") for lib in libraries})
    for directory in directories:
        parts = Path(directory).parts
        entries += [FileEntry("/".join(parts[: i + 1])) for i in range(len(parts))]
    entries += [FileEntry(lib.lstrip("/"), 0o755, Path(lib).resolve()) for lib in libraries]
    return list({entry.path: entry for entry in entries}.values())


def pause_image() -> tuple[str, Path]:
    binary = ensure_pause_binary()
    config = ImageConfig(entrypoint=("/pause",), user="65535:65535")
    return PAUSE_IMAGE, ensure_scratch_image(PAUSE_IMAGE, config, scratch_entries(binary_entries(binary, "pause")))


def coredns_image() -> tuple[str, Path]:
    """CoreDNS as non-root (so the cluster's Corefile listens on 1053; the ``kube-dns`` Service maps 53 to it)."""
    binary = ensure_coredns_binary()
    config = ImageConfig(entrypoint=("/coredns",), exposed_ports=("1053/tcp", "1053/udp"))
    return COREDNS_IMAGE, ensure_scratch_image(COREDNS_IMAGE, config, scratch_entries(binary_entries(binary, "coredns")))


def minio_image() -> tuple[str, Path]:
    """MinIO serving ``/data`` (mount a volume there) as non-root."""
    version, binary = ensure_minio_binary()
    reference = f"{MINIO_REPOSITORY}:{version}"
    config = ImageConfig(
        entrypoint=("/minio",), cmd=("server", "/data", "--console-address", ":9001"),
        exposed_ports=("9000/tcp", "9001/tcp"),
        env=("PATH=/", "HOME=/home/nonroot", "MINIO_CI_CD=1"),
    )
    entries = scratch_entries([*binary_entries(binary, "minio"), FileEntry("data", 0o755, uid=NONROOT, gid=NONROOT)])
    return reference, ensure_scratch_image(reference, config, entries)


# --- Entry points ------------------------------------------------------------------------------


def ensure_images(root: Path | None = None, use_docker: bool | None = None, product_only: bool = False) -> dict[str, Path]:
    """Build whatever is missing and return {image reference: docker archive} for every node image.

    Safe to call from several processes at once: the builds are serialised by a lock on the
    cache directory; an unchanged tree returns in seconds.

    Args:
        root: the source tree the operator and server images are built from (default: this checkout).
        use_docker: build those with ``docker build`` (default: when ``docker info`` answers).
        product_only: only the operator and server images (e.g. for kind, which has its own pause
            and CoreDNS).

    Raises:
        ImageError: a build step failed; its log is named.
    """
    with build.locked(images_dir()):
        found = dict(ensure_product_images(root, use_docker))
        for make in () if product_only else (pause_image, coredns_image, minio_image):
            reference, archive = make()
            found[reference] = archive
    return found


def _image_labels(address: str) -> dict[str, dict[str, str]]:
    proc = subprocess.run(ctr_command(address, "images", "ls"), capture_output=True, text=True)
    if proc.returncode != 0:
        raise ImageError(f"ctr images ls on {address} failed: {proc.stderr.strip()}")
    return parse_image_labels(proc.stdout)


def load_images(archives: Mapping[str, Path], containerd_address: str, snapshotter: str = "overlayfs") -> list[str]:
    """Import each archive into the ``k8s.io`` namespace of the containerd at ``containerd_address``.

    Idempotent: an image already imported from the same archive (recorded in an image label)
    is skipped.

    Args:
        archives: {reference: docker archive}, as ``ensure_images`` returns.
        containerd_address: the containerd socket.
        snapshotter: the CRI's snapshotter, which the images are unpacked for.

    Returns:
        The normalised references imported now (skipped ones are left out).
    """
    label = loaded_label(snapshotter)
    present = _image_labels(containerd_address)
    log = images_dir() / "load.log"
    imported: list[str] = []
    for reference, archive in archives.items():
        name = normalize_reference(reference)
        if present.get(name, {}).get(label) == archive.name:
            continue
        _run(ctr_import_command(containerd_address, archive, snapshotter), log)
        _run(ctr_command(containerd_address, "images", "label", name, f"{label}={archive.name}"), log)
        imported.append(name)
    return imported


def format_images(found: Mapping[str, Path], loaded: Sequence[str], seconds: float) -> str:
    """What ``python -m devcluster images`` prints: one line per image, then the time."""
    lines = []
    for reference, archive in found.items():
        name = normalize_reference(reference)
        mark = " (loaded)" if name in loaded else ""
        lines.append(f"{name:<60} {archive.stat().st_size / 1e6:7.0f} MB  {archive}{mark}")
    lines.append(f"{len(found)} images ready in {seconds:.0f}s")
    return "\n".join(lines)
