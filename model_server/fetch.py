"""The init container's job: download parameters, verify them, and only then install them.

`fetch()` stages everything in a directory beside DEST, verifies the signature and
every file there, writes the verified manifest, and renames the tree onto DEST.
On any failure DEST holds nothing loadable. `termination_record()` is the one-line
JSON the operator reads from the pod's termination message.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from model_server import archive, signing, sources
from model_server.signing import (
    DESTINATION_INVALID,
    DIGEST_MISMATCH,
    SIGNATURE,
    SIGNATURE_MISSING,
    SIGNATURE_VALID,
    SOURCE_NOT_FOUND,
    VERIFIED_MANIFEST,
    VerificationError,
    VerifiedModel,
)

logger = logging.getLogger(__name__)

DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")
MAX_REPORTED_FILES = 20
MAX_MESSAGE = 1000


def fetch(
    source: str,
    dest: str | Path,
    public_key: str | Path,
    signature_uri: str | None = None,
    sha256: str | None = None,
    settings: sources.Settings | None = None,
) -> VerifiedModel:
    """Download SOURCE, verify it with `public_key`, and install it atomically at `dest`.

    Args:
        source: a path, `file://`, `http(s)://` or `s3://` URI of a directory or archive.
        dest: the directory to create; its parent must exist.
        public_key: PEM EC public key the signature must verify with.
        signature_uri: where the signature is; default `model.sig` inside SOURCE
            (for an archive: inside the unpacked tree, else `SOURCE.sig`).
        sha256: pin the signed manifest's root digest (hex, `sha256:` optional).
        settings: size limit, timeouts and retries (default `sources.Settings()`).

    Returns:
        What was verified; DEST then holds the parameters, `model.sig` and the verified manifest.

    Raises:
        VerificationError: nothing was installed, and `reason` says why.
    """
    dest = Path(dest)
    settings = settings or sources.Settings()
    _check_destination(dest)
    signing.load_public_key(public_key)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.fetch-", dir=dest.parent))
    try:
        budget = sources.Budget(settings.max_bytes)
        tree = _download_tree(source, work, budget, settings)
        signature = _signature(source, signature_uri, tree, work, budget, settings)
        verified = signing.verify(tree, public_key, signature)
        _check_pin(verified, sha256)
        serialization_args = signing.signed_serialization(signature)
        if signature != tree / SIGNATURE:
            os.replace(signature, tree / SIGNATURE)
        signing.write_verified_manifest(tree, verified, serialization_args)
        _install(tree, dest, work)
        return verified
    except BaseException:
        _clear_previous(dest)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def termination_record(
    source: str, result: VerifiedModel | VerificationError, key_fingerprint: str | None
) -> dict[str, Any]:
    """The init container's result as the operator reads it (one JSON object)."""
    if isinstance(result, VerifiedModel):
        return {
            "verified": True,
            "reason": SIGNATURE_VALID,
            "message": f"{len(result.files)} files verified with key {result.key_fingerprint}",
            "keyFingerprint": result.key_fingerprint,
            "manifestDigest": result.manifest_digest,
            "failedFiles": [],
            "source": sources.redact(source),
        }
    return {
        "verified": False,
        "reason": result.reason,
        "message": " ".join(str(result.args[0]).split())[:MAX_MESSAGE],
        "keyFingerprint": key_fingerprint,
        "manifestDigest": None,
        "failedFiles": result.files[:MAX_REPORTED_FILES],
        "source": sources.redact(source),
    }


def write_termination_log(path: Path, record: dict[str, Any]) -> None:
    """Write `record` as one line of JSON (Kubernetes keeps the first 4 KiB)."""
    path.write_text(json.dumps(record, sort_keys=True) + "\n")


def _check_destination(dest: Path) -> None:
    """DEST's parent must exist; DEST must be absent, empty, or an earlier fetch's result."""
    if not dest.parent.is_dir():
        raise VerificationError(DESTINATION_INVALID, f"parent of {dest} does not exist")
    if dest.exists() and not dest.is_dir():
        raise VerificationError(DESTINATION_INVALID, f"{dest} exists and is not a directory")
    if dest.is_dir() and any(dest.iterdir()) and not (dest / VERIFIED_MANIFEST).is_file():
        raise VerificationError(DESTINATION_INVALID, f"{dest} is not empty and was not written by fetch")


def _download_tree(source: str, work: Path, budget: sources.Budget, settings: sources.Settings) -> Path:
    """SOURCE as a directory tree in `work`, unpacking it when it is an archive."""
    download = work / "download"
    download.mkdir()
    single = sources.download(source, download, budget, settings)
    if single is None:
        return download
    return archive.unpack(single, work / "tree", budget)


def _signature(
    source: str, signature_uri: str | None, tree: Path, work: Path, budget: sources.Budget, settings: sources.Settings
) -> Path:
    """The signature bundle's local path: from `signature_uri`, inside the tree, or beside SOURCE."""
    if signature_uri is None and (tree / SIGNATURE).is_file():
        return tree / SIGNATURE
    uri = signature_uri or f"{source.rstrip('/')}.sig"
    try:
        return sources.download_file(uri, work / "signature.sig", budget, settings)
    except VerificationError as err:
        if err.reason != SOURCE_NOT_FOUND:
            raise
        where = sources.redact(uri) if signature_uri else f"{SIGNATURE} inside the source or {sources.redact(uri)}"
        raise VerificationError(SIGNATURE_MISSING, f"no signature: {where} not found") from err


def _check_pin(verified: VerifiedModel, sha256: str | None) -> None:
    if sha256 is None:
        return
    pinned = sha256.lower().removeprefix("sha256:")
    if verified.manifest_digest != f"sha256:{pinned}":
        raise VerificationError(
            DIGEST_MISMATCH, f"signed manifest digest {verified.manifest_digest} is not the pinned sha256:{pinned}"
        )


def _install(tree: Path, dest: Path, work: Path) -> None:
    """Rename the verified tree onto DEST (an empty DEST is replaced atomically)."""
    if dest.is_dir() and any(dest.iterdir()):
        os.rename(dest, work / "previous")
    os.rename(tree, dest)
    logger.info("installed verified parameters at %s", dest)


def _clear_previous(dest: Path) -> None:
    """Fail closed: an earlier fetch's parameters must not stay loadable after a failed one."""
    if (dest / VERIFIED_MANIFEST).is_file():
        shutil.rmtree(dest)
