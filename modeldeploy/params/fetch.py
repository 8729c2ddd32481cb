"""The init container's job: download parameters, verify them, and only then install them.

`fetch()` first removes staging directories an interrupted run left beside DEST, then
stages everything in a new one, verifies the signature and every file there, records
what it installs in a marker file (`FETCH_MARKER`), and renames the tree onto DEST. On
any failure DEST holds nothing loadable, and fetch removes only what an earlier fetch
installed there (per its marker), never a directory it did not write. The whole run is
bounded by `Settings.deadline`. `termination_record()` is the one-line JSON (always
under Kubernetes' 4 KiB, reason first) the operator reads from the termination message.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from modeldeploy.contract.pod import MAX_RECORD_BYTES, SIGNED_POLICIES, SignedPolicies, TerminationRecord
from modeldeploy.contract.reasons import (
    DEADLINE_EXCEEDED,
    DESTINATION_INVALID,
    DIGEST_MISMATCH,
    SIGNATURE_MISSING,
    SIGNATURE_VALID,
    SIGNED_POLICIES_INVALID,
    SOURCE_NOT_FOUND,
)
from modeldeploy.params import archive, signing, sources
from modeldeploy.params.errors import ParametersError, TransportError, VerificationError
from modeldeploy.params.signing import FETCH_MARKER, SIGNATURE, VerifiedModel
from modeldeploy.params.trust import Trust

logger = logging.getLogger(__name__)

MAX_REPORTED_FILES = 20
MAX_NAME = 200
MAX_MESSAGE = 1000
MIN_TEXT = 40  # a text field is never clipped shorter
_SHRINKABLE_LISTS = ("failed_files", "signed_policies")
_SHRINKABLE_TEXTS = ("message", "source", "trusted_by", "signer", "issuer")


def staging_prefix(dest: Path) -> str:
    """The name prefix of fetch's staging directories beside DEST."""
    return f".{dest.name}.fetch-"


def fetch(
    source: str,
    dest: str | Path,
    trust: Trust | str | Path,
    signature_uri: str | None = None,
    sha256: str | None = None,
    settings: sources.Settings | None = None,
) -> VerifiedModel:
    """Download SOURCE, verify it against `trust`, and install it atomically at `dest`.

    Args:
        source: a path, `file://`, `http(s)://` or `s3://` URI of a directory or archive.
        dest: the directory to create; its parent must exist.
        trust: the trusted signers (`--trust`), or the PEM EC public key the signature must verify with.
        signature_uri: where the signature is; default `model.sig` inside SOURCE
            (for an archive: inside the unpacked tree, else `SOURCE.sig`).
        sha256: pin the signed manifest's root digest (hex, `sha256:` optional).
        settings: size and expansion limits, timeouts, deadline, retries (default `sources.Settings()`).

    Returns:
        What was verified; DEST then holds the parameters, `model.sig` and fetch's marker.

    Raises:
        VerificationError: nothing was installed, and `reason` says why.
    """
    dest = Path(dest)
    settings = settings or sources.Settings()
    _check_destination(dest)
    trusted = signing.trust_of(trust)
    _remove_stale_staging(dest)
    work = Path(tempfile.mkdtemp(prefix=staging_prefix(dest), dir=dest.parent))
    try:
        with _alarm(settings.deadline):
            budget = sources.Budget(settings.max_bytes, deadline=sources.deadline_after(settings.deadline))
            tree = _download_tree(source, work, budget, settings)
            signature = _signature(source, signature_uri, tree, work, budget, settings)
            verified = _with_signed_policies(signing.verify_tree(tree, trusted, signature))
            _check_pin(verified, sha256)
            if signature != tree / SIGNATURE:
                os.replace(signature, tree / SIGNATURE)
            _write_marker(tree, verified)
            _install(tree, dest, work)
        return verified
    except BaseException:
        _clear_previous(dest)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """Raise `DeadlineExceeded` in the main thread when `seconds` pass, even inside a blocking read."""
    if threading.current_thread() is not threading.main_thread():
        yield  # the per-chunk checks of the budget still apply
        return

    def expire(signum: int, frame: Any) -> None:
        raise TransportError(DEADLINE_EXCEEDED, f"fetch did not finish within its deadline of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def termination_record(
    source: str, result: VerifiedModel | ParametersError, key_fingerprint: str | None
) -> TerminationRecord:
    """The init container's result as the operator reads it, shrunk to fit a termination message."""
    if isinstance(result, VerifiedModel):
        record = TerminationRecord(
            verified=True,
            reason=SIGNATURE_VALID,
            message=f"{len(result.files)} files verified, signed by {_clip(result.signer, MAX_NAME)} "
            f"({_clip(result.trusted_by, MAX_NAME)})",
            key_fingerprint=result.key_fingerprint,
            manifest_digest=result.manifest_digest,
            signer=_clip(result.signer, MAX_NAME),
            issuer=_clip(result.issuer, MAX_NAME) if result.issuer else None,
            trusted_by=_clip(result.trusted_by, MAX_MESSAGE),
            hash_algorithm=result.hash_algorithm,
            signed_policies=tuple(_clip(name, MAX_NAME) for name in result.signed_policies[:MAX_REPORTED_FILES]),
            source=_clip(sources.redact(source), MAX_MESSAGE),
        )
    else:
        record = TerminationRecord(
            verified=False,
            reason=result.reason,
            message=_clip(str(result.args[0]), MAX_MESSAGE),
            key_fingerprint=key_fingerprint,
            failed_files=tuple(_clip(name, MAX_NAME) for name in result.files[:MAX_REPORTED_FILES]),
            source=_clip(sources.redact(source), MAX_MESSAGE),
        )
    return _bounded(record)


def _bounded(record: TerminationRecord) -> TerminationRecord:
    """`record` shrunk until its line fits in MAX_RECORD_BYTES (`verified` and `reason` always survive).

    Each round halves the field that takes the most room: a list loses its second half, a
    text is clipped to half (not below MIN_TEXT characters).
    """
    while len(record.line()) > MAX_RECORD_BYTES:
        sizes = {
            name: len(json.dumps(value, ensure_ascii=True))
            for name in (*_SHRINKABLE_LISTS, *_SHRINKABLE_TEXTS)
            if (value := getattr(record, name)) and (name in _SHRINKABLE_LISTS or len(value) > MIN_TEXT)
        }
        if not sizes:
            break
        largest = max(sizes, key=sizes.__getitem__)
        value = getattr(record, largest)
        half = len(value) // 2
        shrunk = value[:half] if largest in _SHRINKABLE_LISTS else _clip(value, max(MIN_TEXT, half))
        record = record.model_copy(update={largest: shrunk})
    return record


def write_termination_log(path: Path, record: TerminationRecord) -> None:
    """Write `record` as one line of JSON (Kubernetes keeps the first 4 KiB)."""
    path.write_text(record.line() + "\n")


def _check_destination(dest: Path) -> None:
    """DEST's parent must exist; DEST must be absent, empty, or an earlier fetch's result; never a symlink."""
    if not dest.parent.is_dir():
        raise VerificationError(DESTINATION_INVALID, f"parent of {dest} does not exist")
    if dest.is_symlink():
        raise VerificationError(
            DESTINATION_INVALID, f"{dest} is a symbolic link; fetch installs only into a real directory"
        )
    if dest.exists() and not dest.is_dir():
        raise VerificationError(DESTINATION_INVALID, f"{dest} exists and is not a directory")
    if not dest.is_dir() or not any(dest.iterdir()):
        return
    installed = _installed_files(dest)
    if installed is None:
        raise VerificationError(DESTINATION_INVALID, f"{dest} is not empty and was not written by fetch")
    others = sorted(
        p.relative_to(dest).as_posix()
        for p in dest.rglob("*")
        if not p.is_dir() and p.relative_to(dest).as_posix() not in {*installed, FETCH_MARKER}
    )
    if others:
        raise VerificationError(
            DESTINATION_INVALID, f"{dest} holds files fetch did not write: {', '.join(others[:5])}", others
        )


def _remove_stale_staging(dest: Path) -> None:
    """Staging directories of an earlier, interrupted fetch to the same DEST."""
    for stale in dest.parent.glob(f"{staging_prefix(dest)}*"):
        if stale.is_dir() and not stale.is_symlink():
            logger.info("removing stale staging directory %s", stale)
            shutil.rmtree(stale, ignore_errors=True)


def _download_tree(source: str, work: Path, budget: sources.Budget, settings: sources.Settings) -> Path:
    """SOURCE as a directory tree in `work`, unpacking it when it is an archive."""
    download = work / "download"
    download.mkdir()
    single = sources.download(source, download, budget, settings)
    if single is None:
        return download
    return archive.unpack(single, work / "tree", budget, settings.max_expansion)


def _signature(
    source: str, signature_uri: str | None, tree: Path, work: Path, budget: sources.Budget, settings: sources.Settings
) -> Path:
    """The signature bundle's local path: from `signature_uri`, inside the tree, or beside SOURCE."""
    if signature_uri is None and (tree / SIGNATURE).is_file():
        return tree / SIGNATURE
    uri = signature_uri or f"{source.rstrip('/')}.sig"
    try:
        return sources.download_file(uri, work / "signature.sig", budget, settings)
    except TransportError as err:
        if err.reason != SOURCE_NOT_FOUND:
            raise
        where = sources.redact(uri) if signature_uri else f"{SIGNATURE} inside the source or {sources.redact(uri)}"
        raise VerificationError(SIGNATURE_MISSING, f"no signature: {where} not found") from err


def _with_signed_policies(tree: signing.VerifiedTree) -> VerifiedModel:
    """What was verified, with the names of the signed guardrails (`policies.yaml`) if the tree has them.

    Raises:
        VerificationError: `SignedPoliciesInvalid` when the signed `policies.yaml` is not a policy list.
    """
    if SIGNED_POLICIES not in tree.names:
        return tree.verified
    try:
        policies = SignedPolicies.parse(tree.read(SIGNED_POLICIES))
    except ValueError as err:
        raise VerificationError(SIGNED_POLICIES_INVALID, str(err)) from None
    return dataclasses.replace(tree.verified, signed_policies=tuple(policy.name for policy in policies))


def _check_pin(verified: VerifiedModel, sha256: str | None) -> None:
    if sha256 is None:
        return
    pinned = sha256.lower().removeprefix("sha256:")
    if verified.manifest_digest != f"sha256:{pinned}":
        raise VerificationError(
            DIGEST_MISMATCH, f"signed manifest digest {verified.manifest_digest} is not the pinned sha256:{pinned}"
        )


def _write_marker(tree: Path, verified: VerifiedModel) -> None:
    """Record what this fetch installs, tied to the directory itself (a copy elsewhere is not ours)."""
    info = tree.stat()
    document = {
        "device": info.st_dev,
        "inode": info.st_ino,
        "files": sorted(path.relative_to(tree).as_posix() for path in tree.rglob("*") if path.is_file()),
        "keyFingerprint": verified.key_fingerprint,
        "manifestDigest": verified.manifest_digest,
    }
    (tree / FETCH_MARKER).write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def _installed_files(dest: Path) -> list[str] | None:
    """The files an earlier fetch installed at DEST (per its marker), or None if DEST is not fetch's."""
    try:
        document = json.loads((dest / FETCH_MARKER).read_text())
        info = dest.stat()
        if (document["device"], document["inode"]) != (info.st_dev, info.st_ino):
            return None
        return [str(name) for name in document["files"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _install(tree: Path, dest: Path, work: Path) -> None:
    """Rename the verified tree onto DEST (an empty DEST is replaced atomically)."""
    if dest.is_dir() and any(dest.iterdir()):
        os.rename(dest, work / "previous")
    os.rename(tree, dest)
    logger.info("installed verified parameters at %s", dest)


def _clear_previous(dest: Path) -> None:
    """Fail closed: an earlier fetch's parameters must not stay loadable after a failed one.

    Removes only the files that fetch's marker lists (then empty directories and DEST
    itself when nothing else is left); anything else in DEST stays.
    """
    installed = _installed_files(dest) if dest.is_dir() and not dest.is_symlink() else None
    if installed is None:
        return
    for name in installed:
        path = dest / name
        if path.is_file() and not path.is_symlink():
            path.unlink()
    (dest / FETCH_MARKER).unlink(missing_ok=True)
    for directory in sorted((p for p in dest.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True):
        with contextlib.suppress(OSError):
            directory.rmdir()
    with contextlib.suppress(OSError):
        dest.rmdir()
