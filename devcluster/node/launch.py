"""The first code of every container: runs inside the pod's netns and a fresh mount namespace.

Started as ``nsenter --net=NETNS unshare --mount --propagation private python -m
devcluster.node.launch SPEC.json``; bind-mounts the volumes at their mount paths (read-only
where asked), binds back the Python environment where a volume hid it (the image's own
files, e.g. a checkout under ``/tmp`` below an emptyDir at ``/tmp``), changes to the working directory and ``exec``s the container's command with
its environment, so the container keeps this pid. Must stay small: it runs for every start.
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path

MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC = 1, 32, 4096, 16384
_libc = ctypes.CDLL(None, use_errno=True)


def bind(source: str, target: str, read_only: bool, is_dir: bool) -> None:
    """``mount --rbind source target`` (then remount read-only)."""
    if not os.path.lexists(target):
        if is_dir:
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            Path(target).touch()
    flags = [MS_BIND | MS_REC] + ([MS_BIND | MS_REMOUNT | MS_RDONLY] if read_only else [])
    for flag in flags:
        if _libc.mount(source.encode(), target.encode(), None, flag, None) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount {source} on {target}: {os.strerror(err)}")


def hidden_by(path: str, targets: list[str]) -> bool:
    """Whether mounting at any of ``targets`` covers ``path``."""
    return any(path == target or path.startswith(target.rstrip("/") + "/") for target in targets)


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    try:
        # Hold every source open first: a mount may hide the path of a later source.
        held = [(os.open(m["source"], os.O_PATH), m) for m in spec["mounts"]]
        targets = [m["target"] for m in spec["mounts"]]
        runtime = [(os.open(path, os.O_PATH), path) for path in spec["runtime"] if hidden_by(path, targets)]
        for fd, mount in held:
            bind(f"/proc/self/fd/{fd}", mount["target"], mount["read_only"], os.path.isdir(mount["source"]))
            os.close(fd)
        for fd, path in runtime:
            bind(f"/proc/self/fd/{fd}", path, True, True)
            os.close(fd)
        os.chdir(spec.get("workingDir") or "/")
        os.execvpe(spec["argv"][0], spec["argv"], spec["env"])
    except OSError as err:
        print(f"failed to start container: {err}", file=sys.stderr)
        raise SystemExit(128) from None


if __name__ == "__main__":
    main()
