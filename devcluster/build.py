"""Build and cache the cluster's binaries from the Go module proxy.

Owns the pinned versions and the cache layout (``~/.cache/modeldeploy/k8s-<version>/bin``:
the control plane, kubectl, the kubelet and kube-proxy; ``etcd-<version>/bin``,
``crictl-<version>/bin``).
Kubernetes is built in a throw-away wrapper module whose ``replace`` lines pin every
staging module (``k8s.io/api``, ...) to the release's matching ``v0.x`` tag; those lines are
generated from the release's own ``go.mod``. Nothing here starts a process other than ``go``.

etcd is built too (``go.etcd.io/etcd/server/v3``, the 3.6 line Kubernetes 1.34 ships with)
rather than taken from Debian: Debian's ``etcd-server`` is 3.4.23, older than the 3.5/3.6
releases Kubernetes 1.34 is tested with (the API server falls back for RequestWatchProgress),
and installing it needs apt and root.
The build costs about two minutes once per machine and is cached the same way.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

K8S_VERSION = "v1.34.4"
ETCD_VERSION = "v3.6.16"
KUBE_COMMANDS = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubectl",
    "kubelet",
    "kube-proxy",
)
ETCD_PACKAGE = "go.etcd.io/etcd/server/v3"
CRICTL_VERSION = "v1.34.0"
CRICTL_PACKAGE = "sigs.k8s.io/cri-tools/cmd/crictl"
_STAGING_REPLACE = re.compile(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/src/\1\s*$")
_GODEBUG = re.compile(r"^godebug\s")
_GO_DIRECTIVE = re.compile(r"^go\s+(\d+\.\d+(?:\.\d+)?)\s*$")


class BuildError(RuntimeError):
    """``go`` failed; the message names the step and the log file."""


@dataclass(frozen=True)
class Binaries:
    """Paths of the built executables."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kubelet: Path
    kube_proxy: Path
    crictl: Path


def cache_root() -> Path:
    """The machine-wide cache, ``$MODELDEPLOY_CACHE`` or ``~/.cache/modeldeploy``."""
    override = os.environ.get("MODELDEPLOY_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "modeldeploy"


def k8s_dir(version: str = K8S_VERSION) -> Path:
    return cache_root() / f"k8s-{version}"


def etcd_dir(version: str = ETCD_VERSION) -> Path:
    return cache_root() / f"etcd-{version}"


def crictl_dir(version: str = CRICTL_VERSION) -> Path:
    return cache_root() / f"crictl-{version}"


def binaries(k8s_version: str = K8S_VERSION, etcd_version: str = ETCD_VERSION) -> Binaries:
    """Where the binaries are (or will be) for these versions; does not build."""
    kube = k8s_dir(k8s_version) / "bin"
    return Binaries(
        etcd=etcd_dir(etcd_version) / "bin" / "etcd",
        kube_apiserver=kube / "kube-apiserver",
        kube_controller_manager=kube / "kube-controller-manager",
        kube_scheduler=kube / "kube-scheduler",
        kubectl=kube / "kubectl",
        kubelet=kube / "kubelet",
        kube_proxy=kube / "kube-proxy",
        crictl=crictl_dir() / "bin" / "crictl",
    )


def kubectl_path() -> Path:
    """The cached kubectl matching the control plane (build it with ``ensure_binaries``)."""
    return binaries().kubectl


def staging_version(k8s_version: str) -> str:
    """``v1.34.4`` -> ``v0.34.4``: the tag of the staging modules of that release."""
    match = re.fullmatch(r"v1\.(\d+\.\d+.*)", k8s_version)
    if not match:
        raise ValueError(f"not a Kubernetes 1.x release tag: {k8s_version!r}")
    return f"v0.{match.group(1)}"


def wrapper_go_mod(release_go_mod: str, k8s_version: str, commands: Sequence[str]) -> str:
    """The wrapper module's go.mod, derived from ``k8s.io/kubernetes``'s own go.mod.

    Keeps the release's ``go`` and ``godebug`` directives and turns each
    ``k8s.io/x => ./staging/src/k8s.io/x`` into ``k8s.io/x => k8s.io/x v0.N.P``.
    """
    go_version = "1.24.0"
    godebug: list[str] = []
    staging: list[str] = []
    for line in release_go_mod.splitlines():
        if m := _GO_DIRECTIVE.match(line):
            go_version = m.group(1)
        elif _GODEBUG.match(line):
            godebug.append(line.strip())
        elif m := _STAGING_REPLACE.match(line):
            staging.append(m.group(1))
    if not staging:
        raise ValueError("no staging replace lines found in the release go.mod")
    pin = staging_version(k8s_version)
    lines = ["module modeldeploy.local/k8sbuild", "", f"go {go_version}", "", *godebug, ""]
    lines += ["require k8s.io/kubernetes " + k8s_version, "", "replace ("]
    lines += [f"\t{mod} => {mod} {pin}" for mod in sorted(staging)]
    lines += [")", "", "tool ("]
    lines += [f"\tk8s.io/kubernetes/cmd/{cmd}" for cmd in commands]
    lines += [")", ""]
    return "\n".join(lines)


def version_ldflags(k8s_version: str) -> str:
    """``-ldflags`` stamping the release into component-base and client-go."""
    m = re.fullmatch(r"v(\d+)\.(\d+)\..*", k8s_version)
    if not m:
        raise ValueError(f"not a release tag: {k8s_version!r}")
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={k8s_version}",
            f"-X {pkg}.gitMajor={m.group(1)}",
            f"-X {pkg}.gitMinor={m.group(2)}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    return " ".join(flags)


def _go(args: Sequence[str], cwd: Path, log: Path) -> str:
    """Run ``go`` in ``cwd``, appending its output to ``log``; return stdout."""
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false -mod=mod"}
    started = time.monotonic()
    with log.open("a") as sink:
        sink.write(f"$ go {' '.join(args)}\n")
        sink.flush()
        proc = subprocess.run(
            ["go", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=sink, text=True
        )
        sink.write(f"# exit {proc.returncode} after {time.monotonic() - started:.0f}s\n")
    if proc.returncode != 0:
        raise BuildError(f"go {args[0]} failed in {cwd} (exit {proc.returncode}); see {log}")
    return proc.stdout


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Serialise builds of one cache directory between processes."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / ".lock").open("w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            logger.info("waiting for another process building in %s", directory)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_into(directory: Path, go_mod: str, packages: Sequence[str], ldflags: str) -> None:
    """Write the wrapper module, resolve it, build ``packages`` into ``directory/bin``."""
    src, log = directory / "src", directory / "build.log"
    src.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text(go_mod)
    _go(["mod", "tidy"], src, log)
    staging = directory / "bin.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    _go(["build", "-trimpath", "-ldflags", ldflags, "-o", str(staging), *packages], src, log)
    shutil.rmtree(directory / "bin", ignore_errors=True)
    staging.rename(directory / "bin")


def build_kubernetes(version: str = K8S_VERSION) -> None:
    """Build kube-apiserver, -controller-manager, -scheduler and kubectl for ``version``."""
    directory = k8s_dir(version)
    with locked(directory):
        if all((directory / "bin" / cmd).exists() for cmd in KUBE_COMMANDS):
            return
        log = directory / "build.log"
        scratch = directory / "probe"
        scratch.mkdir(exist_ok=True)
        (scratch / "go.mod").write_text("module probe\n")
        info = json.loads(_go(["mod", "download", "-json", f"k8s.io/kubernetes@{version}"], scratch, log))
        go_mod = wrapper_go_mod(Path(info["GoMod"]).read_text(), version, KUBE_COMMANDS)
        packages = [f"k8s.io/kubernetes/cmd/{cmd}" for cmd in KUBE_COMMANDS]
        _build_into(directory, go_mod, packages, version_ldflags(version))


def command_name(package: str) -> str:
    """The file ``go build -o DIR`` writes for ``package`` (a major-version suffix is skipped)."""
    parts = package.split("/")
    return parts[-2] if re.fullmatch(r"v\d+", parts[-1]) else parts[-1]


def build_tool(directory: Path, module: str, version: str, package: str, binary: str) -> Path:
    """Build one Go command (``package`` of ``module@version``) into ``directory/bin/binary``, once."""
    target = directory / "bin" / binary
    with locked(directory):
        if target.exists():
            return target
        go_mod = f"module modeldeploy.local/toolbuild\n\ngo 1.24.0\n\nrequire {module} {version}\n\ntool {package}\n"
        _build_into(directory, go_mod, [package], "-s -w")
        built = directory / "bin" / command_name(package)
        if built != target:
            built.rename(target)
    return target


def build_etcd(version: str = ETCD_VERSION) -> None:
    """Build the etcd server binary for ``version``."""
    build_tool(etcd_dir(version), ETCD_PACKAGE, version, ETCD_PACKAGE, "etcd")


def build_crictl(version: str = CRICTL_VERSION) -> None:
    """Build crictl, the CRI client the node's teardown uses to stop every pod sandbox."""
    build_tool(crictl_dir(version), "sigs.k8s.io/cri-tools", version, CRICTL_PACKAGE, "crictl")


def ensure_binaries() -> Binaries:
    """Build whatever is missing from the cache and return the paths."""
    build_etcd()
    build_crictl()
    build_kubernetes()
    return binaries()


def main() -> None:
    """Entry point of ``scripts/build-k8s.sh``: build or reuse, report the time."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.monotonic()
    found = ensure_binaries()
    logger.info("control-plane binaries ready in %.0fs under %s", time.monotonic() - started, cache_root())
    for path in vars(found).values():
        logger.info("  %s", path)
