"""Unpack a downloaded `.tar.gz`/`.tar`/`.zip` archive safely.

Refuses (`UnsafeArchive`) absolute paths, `..`, symbolic and hard links, device
files and FIFOs; counts every unpacked byte against the fetch's size budget and against
`max_expansion` times the archive's size (`TooLarge`), whatever the archive's headers
claim. A backslash in a member name is an ordinary character. Never verifies anything.
"""

from __future__ import annotations

import stat
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from modeldeploy.contract.reasons import SOURCE_INVALID, UNSAFE_ARCHIVE
from modeldeploy.params.errors import TransportError, VerificationError
from modeldeploy.params.sources import CHUNK, Budget, safe_relative, write_chunks


def unpack(archive: Path, target: Path, budget: Budget, max_expansion: float = 100.0) -> Path:
    """Unpack `archive` into the new directory `target`, at most `max_expansion` times its size.

    Returns:
        The tree's root: `target`, or its only entry when that is a directory
        (archives made with `tar czf iris.tar.gz iris/`).

    Raises:
        VerificationError: `SourceInvalid` (not an archive), `UnsafeArchive`, `TooLarge`.
    """
    target.mkdir()
    limit = max(int(archive.stat().st_size * max_expansion), 1 << 20)
    budget = budget.limited(limit, f"the expansion limit ({max_expansion:g} x the archive's size)")
    if zipfile.is_zipfile(archive):
        _unpack_zip(archive, target, budget)
    elif tarfile.is_tarfile(archive):
        _unpack_tar(archive, target, budget)
    else:
        raise TransportError(SOURCE_INVALID, f"{archive.name} is neither a directory nor a .tar.gz or .zip archive")
    entries = list(target.iterdir())
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return target


def _is_root(name: str) -> bool:
    """`.` or `./`: the archive's own top directory (`tar czf x.tar.gz -C dir .`)."""
    return all(part in ("", ".") for part in name.split("/"))


def _member_path(name: str) -> PurePosixPath:
    try:
        return safe_relative(name)
    except ValueError as err:
        raise VerificationError(
            UNSAFE_ARCHIVE, f"archive member {name!r} points outside the destination", [name]
        ) from err


def _chunks(stream: IO[bytes]) -> Iterator[bytes]:
    return iter(lambda: stream.read(CHUNK), b"")


def _unpack_tar(archive: Path, target: Path, budget: Budget) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if member.isdir() and _is_root(member.name):
                    continue
                relative = _member_path(member.name)
                if member.isdir():
                    (target / relative).mkdir(parents=True, exist_ok=True)
                elif member.isreg():
                    stream = tar.extractfile(member)
                    if stream is None:
                        raise TransportError(SOURCE_INVALID, f"archive member {member.name!r} has no data")
                    (target / relative).unlink(missing_ok=True)
                    write_chunks(_chunks(stream), target / relative, budget, f"archive member {member.name}")
                else:
                    kind = "link" if member.issym() or member.islnk() else "device or FIFO"
                    raise VerificationError(
                        UNSAFE_ARCHIVE,
                        f"archive member {member.name!r} is a {kind}; only files and directories are allowed",
                        [member.name],
                    )
    except (tarfile.TarError, EOFError, OSError) as err:
        raise TransportError(SOURCE_INVALID, f"{archive.name} is a damaged tar archive: {err}") from err


def _unpack_zip(archive: Path, target: Path, budget: Budget) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir() and _is_root(info.filename):
                    continue
                relative = _member_path(info.filename)
                kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the creator recorded no type
                if info.is_dir():
                    (target / relative).mkdir(parents=True, exist_ok=True)
                elif kind not in (0, stat.S_IFREG):
                    raise VerificationError(
                        UNSAFE_ARCHIVE,
                        f"archive member {info.filename!r} is a link or special file; "
                        "only files and directories are allowed",
                        [info.filename],
                    )
                else:
                    with zf.open(info) as stream:
                        (target / relative).unlink(missing_ok=True)
                        write_chunks(_chunks(stream), target / relative, budget, f"archive member {info.filename}")
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        raise TransportError(SOURCE_INVALID, f"{archive.name} is a damaged zip archive: {err}") from err
