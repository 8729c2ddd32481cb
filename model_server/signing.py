"""Sign and verify parameters directories with OpenSSF Model Signing (EC keys).

This is the only module that imports `model_signing`; the CLI, the init
container (`fetch`) and the model server all go through it. It owns the
mapping from `model_signing`'s failures to a `VerificationError` whose
`reason` is a CamelCase constant and whose `files` name what differs. It does
no network I/O and never loads a parameters file.

Exceptions:

    VerificationError(Exception)   reason + files + one-line message
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from model_signing import hashing, signing, verifying

SIGNATURE = "model.sig"
VERIFIED_MANIFEST = "verified-manifest.json"
UNSIGNED = (SIGNATURE, VERIFIED_MANIFEST)

# Reasons (CamelCase, surfaced in the ModelDeployment's status).
SIGNATURE_VALID = "SignatureValid"
SIGNATURE_MISSING = "SignatureMissing"
SIGNATURE_MALFORMED = "SignatureMalformed"
SIGNATURE_INVALID = "SignatureInvalid"
KEY_MISMATCH = "KeyMismatch"
PUBLIC_KEY_INVALID = "PublicKeyInvalid"
FILES_DIFFER = "FilesDiffer"
MANIFEST_MISSING = "ManifestMissing"
DIGEST_MISMATCH = "DigestMismatch"
SOURCE_NOT_FOUND = "SourceNotFound"
SOURCE_INVALID = "SourceInvalid"
DOWNLOAD_FAILED = "DownloadFailed"
UNSAFE_ARCHIVE = "UnsafeArchive"
UNSAFE_FILE = "UnsafeFile"
TOO_LARGE = "TooLarge"
DESTINATION_INVALID = "DestinationInvalid"
FETCH_FAILED = "FetchFailed"

CURVES: dict[str, ec.EllipticCurve] = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1()}


class VerificationError(Exception):
    """Parameters that must not be loaded; `reason` says why, `files` which."""

    def __init__(self, reason: str, message: str, files: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.reason = reason
        self.files = sorted(files)

    def __str__(self) -> str:
        return f"{self.reason}: {self.args[0]}"


@dataclass(frozen=True)
class VerifiedModel:
    """What a successful verification vouches for."""

    key_fingerprint: str
    manifest_digest: str
    files: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Statement:
    """The signed in-toto statement, read from a bundle (authentic only once verified)."""

    root_digest: str
    files: dict[str, str]
    serialization: dict[str, Any]


def generate_key(curve: str = "p256") -> ec.EllipticCurvePrivateKey:
    """A new EC private key on `curve` (`p256` or `p384`)."""
    return ec.generate_private_key(CURVES[curve])


def private_key_pem(key: ec.EllipticCurvePrivateKey, password: str | None = None) -> bytes:
    """PKCS#8 PEM of `key`, encrypted when a password is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def public_key_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM of `key`."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """`sha256:<hex>` of the DER SubjectPublicKeyInfo."""
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"sha256:{hashlib.sha256(der).hexdigest()}"


def load_public_key(path: str | Path) -> ec.EllipticCurvePublicKey:
    """Read a PEM EC public key.

    Raises:
        VerificationError: `PublicKeyInvalid` when it is missing, not PEM or not EC.
    """
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError, UnsupportedAlgorithm) as err:
        raise VerificationError(PUBLIC_KEY_INVALID, f"cannot read public key {path}: {err}") from err
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise VerificationError(PUBLIC_KEY_INVALID, f"public key {path} is not an elliptic-curve key")
    return key


def sign(
    model_dir: str | Path,
    private_key_path: str | Path,
    signature_path: str | Path | None = None,
    password: str | None = None,
) -> Path:
    """Sign every file of `model_dir` except the signature and the verified manifest.

    Args:
        model_dir: the parameters directory.
        private_key_path: PEM EC private key.
        signature_path: where to write the bundle; default `model_dir/model.sig`.
        password: the private key's password, if it is encrypted.

    Returns:
        The path of the written signature bundle.
    """
    model_dir = Path(model_dir)
    signature = Path(signature_path) if signature_path else model_dir / SIGNATURE
    hashing_config = hashing.Config().set_ignored_paths(paths=_ignored(model_dir, signature), ignore_git_paths=False)
    signing.Config().use_elliptic_key_signer(
        private_key=private_key_path,
        password=password.encode() if password else None,  # type: ignore[arg-type]
    ).set_hashing_config(hashing_config).sign(model_dir, signature)
    return signature


def verify(
    model_dir: str | Path,
    public_key_path: str | Path,
    signature_path: str | Path | None = None,
) -> VerifiedModel:
    """Check the signature with the public key, then every file against the signed manifest.

    Args:
        model_dir: the parameters directory.
        public_key_path: PEM EC public key the signature must verify with.
        signature_path: the bundle; default `model_dir/model.sig`.

    Returns:
        The key fingerprint, the manifest's root digest and the signed file digests.

    Raises:
        VerificationError: `SignatureMissing`, `SignatureMalformed`, `SignatureInvalid`,
            `KeyMismatch`, `PublicKeyInvalid` or `FilesDiffer` (with the file names).
    """
    model_dir = Path(model_dir)
    signature = Path(signature_path) if signature_path else model_dir / SIGNATURE
    key = load_public_key(public_key_path)
    if not signature.is_file():
        raise VerificationError(SIGNATURE_MISSING, f"no signature at {signature}")
    statement = _read_statement(signature)
    hashing_config = _hashing_config(statement.serialization, _ignored(model_dir, signature))
    config = verifying.Config().use_elliptic_key_verifier(public_key=public_key_path)
    try:
        config.set_hashing_config(hashing_config).verify(model_dir, signature)
    except InvalidSignature as err:
        raise VerificationError(
            SIGNATURE_INVALID, f"the signature does not verify with the trusted key {fingerprint(key)}"
        ) from err
    except ValueError as err:
        text = str(err)
        if text.startswith("Key mismatch"):
            raise VerificationError(
                KEY_MISMATCH, f"the signature was made by another key than the trusted key {fingerprint(key)}"
            ) from err
        if text.startswith("Signature mismatch"):
            raise _files_differ(statement.files, _hash(model_dir, hashing_config), "signed manifest") from err
        if text.startswith("Cannot use"):  # a symlink or special file in the tree
            raise VerificationError(FILES_DIFFER, text) from err
        raise VerificationError(SIGNATURE_MALFORMED, f"the signature is not valid: {text}") from err
    return VerifiedModel(fingerprint(key), f"sha256:{statement.root_digest}", statement.files)


def write_verified_manifest(model_dir: str | Path, verified: VerifiedModel, serialization_args: dict[str, Any]) -> Path:
    """Record what was verified next to the parameters, for `check_manifest`."""
    path = Path(model_dir) / VERIFIED_MANIFEST
    document = {
        "keyFingerprint": verified.key_fingerprint,
        "manifestDigest": verified.manifest_digest,
        "serialization": serialization_args,
        "files": verified.files,
    }
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    return path


def seal(model_dir: str | Path, private_key_path: str | Path, public_key_path: str | Path) -> VerifiedModel:
    """Sign MODEL_DIR, verify it and record the verified manifest in place: what `fetch` leaves.

    For serving a local directory (tests, benchmarks) without a fetch step.
    """
    signature = sign(model_dir, private_key_path)
    verified = verify(model_dir, public_key_path, signature)
    write_verified_manifest(model_dir, verified, signed_serialization(signature))
    return verified


def signed_serialization(signature_path: str | Path) -> dict[str, Any]:
    """The hashing parameters recorded in a signature bundle (not authenticated)."""
    return _read_statement(Path(signature_path)).serialization


def signed_digest(signature_path: str | Path) -> str:
    """`sha256:<root digest>` of the manifest in a signature bundle (not authenticated)."""
    return f"sha256:{_read_statement(Path(signature_path)).root_digest}"


def check_manifest(model_dir: str | Path) -> VerifiedModel:
    """Re-hash `model_dir` against its verified manifest (the server calls this before loading).

    Raises:
        VerificationError: `ManifestMissing` when there is no readable verified manifest,
            `FilesDiffer` when a file differs, is missing or is extra.
    """
    model_dir = Path(model_dir)
    path = model_dir / VERIFIED_MANIFEST
    try:
        document = json.loads(path.read_text())
        files = {str(name): str(digest) for name, digest in document["files"].items()}
        verified = VerifiedModel(str(document["keyFingerprint"]), str(document["manifestDigest"]), files)
        serialization_args = dict(document["serialization"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise VerificationError(MANIFEST_MISSING, f"no readable {VERIFIED_MANIFEST} in {model_dir}: {err}") from err
    actual = _hash(model_dir, _hashing_config(serialization_args, UNSIGNED))
    if actual != files:
        raise _files_differ(files, actual, "verified manifest")
    return verified


def _ignored(model_dir: Path, signature: Path) -> list[str]:
    """Paths (relative to `model_dir`) never part of what is signed."""
    ignored = list(UNSIGNED)
    with contextlib.suppress(ValueError):  # a signature outside the directory
        ignored.append(signature.resolve().relative_to(model_dir.resolve()).as_posix())
    return ignored


def _read_statement(signature: Path) -> _Statement:
    """Parse the in-toto statement inside a bundle, without checking the signature."""
    try:
        bundle = json.loads(signature.read_bytes())
        statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"], validate=True))
        predicate = statement["predicate"]
        files = {str(r["name"]): str(r["digest"]) for r in predicate["resources"]}
        return _Statement(str(statement["subject"][0]["digest"]["sha256"]), files, dict(predicate["serialization"]))
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError, binascii.Error) as err:
        raise VerificationError(
            SIGNATURE_MALFORMED, f"{signature.name} is not an OpenSSF Model Signing bundle: {err!r}"
        ) from err


def _hashing_config(serialization_args: dict[str, Any], ignored: Iterable[str]) -> hashing.Config:
    """The hashing configuration a signature was made with, plus our unsigned paths."""
    method = serialization_args.get("method")
    algorithm = serialization_args.get("hash_type", "sha256")
    config = hashing.Config()
    if method == "files":
        config.use_file_serialization(hashing_algorithm=algorithm)
    elif method == "shards":
        config.use_shard_serialization(hashing_algorithm=algorithm, shard_size=int(serialization_args["shard_size"]))
    else:
        raise VerificationError(SIGNATURE_MALFORMED, f"unsupported serialization method {method!r}")
    extra = [str(p) for p in serialization_args.get("ignore_paths", [])]
    return config.set_ignored_paths(paths=[*ignored, *extra], ignore_git_paths=False)


def _hash(model_dir: Path, config: hashing.Config) -> dict[str, str]:
    """Relative path (or shard) -> hex digest of what is in `model_dir` now."""
    try:
        manifest = config.hash(model_dir)
    except ValueError as err:  # a symlink, a socket, ...
        raise VerificationError(FILES_DIFFER, str(err)) from err
    return {rd.identifier: rd.digest.digest_hex for rd in manifest.resource_descriptors()}


def _files_differ(expected: dict[str, str], actual: dict[str, str], against: str) -> VerificationError:
    """One `FilesDiffer` error naming changed, extra and missing files."""
    changed = sorted(name for name in expected.keys() & actual.keys() if expected[name] != actual[name])
    extra = sorted(actual.keys() - expected.keys())
    missing = sorted(expected.keys() - actual.keys())
    parts = [
        f"{label} {', '.join(names)}"
        for label, names in (("changed", changed), ("extra", extra), ("missing", missing))
        if names
    ]
    message = f"files do not match the {against}: {'; '.join(parts)}"
    return VerificationError(FILES_DIFFER, message, [*changed, *extra, *missing])
