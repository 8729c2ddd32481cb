"""A throwaway containerd (own root, state and socket under a temporary directory) for the image tests.

It never touches the machine's containerd (/run/containerd, /var/lib/containerd); the CRI plugin
is disabled, since the tests drive it with ``ctr`` only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster import process
from devcluster.components import Probe, ProcessSpec

CONFIG = """\
version = 2
root = "{root}/root"
state = "{root}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{root}/containerd.sock"
"""


def _require_runtime() -> None:
    """Fail with what is missing: `make test` installs containerd and runc and runs as root."""
    assert os.geteuid() == 0, "the image tests run containers: run them as root (as `make test` in CI does)"
    missing = [tool for tool in ("containerd", "ctr", "runc") if shutil.which(tool) is None]
    assert not missing, f"{missing} not installed: run scripts/install-node-packages.sh (make node-packages)"


@pytest.fixture(scope="session")
def node_image_archives(request: pytest.FixtureRequest) -> dict[str, Path]:
    """``node_images``, on a machine where containerd and runc can run them."""
    _require_runtime()
    archives: dict[str, Path] = request.getfixturevalue("node_images")
    return archives


@pytest.fixture(scope="session")
def throwaway_containerd() -> Iterator[str]:
    """The socket of a containerd of our own, stopped and removed at the end."""
    _require_runtime()
    root = Path(tempfile.mkdtemp(prefix="mdc-", dir="/tmp"))  # short: a socket path has 108 bytes
    (root / "config.toml").write_text(CONFIG.format(root=root))
    address = str(root / "containerd.sock")
    # devcluster.process runs it in its own session and stops it by pid and start time; the
    # probe is never called (containerd has no HTTP health endpoint here; ``ctr version`` is).
    command = ("containerd", "--config", str(root / "config.toml"))
    spec = ProcessSpec("containerd", command, root / "containerd.log", Probe(""))
    handle = process.start(spec)
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(["ctr", "--address", address, "version"], capture_output=True).returncode != 0:
            if not process.alive(handle) or time.monotonic() > deadline:
                pytest.fail(f"throwaway containerd did not start; see {spec.log}")
            time.sleep(0.2)
        yield address
    finally:
        process.stop(handle, timeout=20)
        subprocess.run(["umount", "--recursive", "--lazy", str(root / "state")], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
