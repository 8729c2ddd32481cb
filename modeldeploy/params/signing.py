"""Sign and verify parameters directories with OpenSSF Model Signing (EC keys).

This is the only module that imports `model_signing`; the CLI, the init
container (`fetch`) and the model server all go through it. It owns the
refusals (reason codes from `modeldeploy.contract.reasons`, surfaced in the
ModelDeployment's status), and classifies `model_signing`'s failures by
exception type and by its own checks, never by message text. It does no
network I/O and never loads a parameters file.

What a verification vouches for (`verify_tree`): the bundle is a key- or
certificate-method OpenSSF Model Signing bundle whose DSSE signature verifies,
for every policy of the `Trust`, with one of its signers (an EC public key, or
a certificate chaining to its roots within its subject and SAN constraints);
every regular file of the tree is listed in the signed manifest (nothing is
ignored except `UNSIGNED` at the top level, whatever ignore paths the
signature records) and none is missing; no symlink or special file exists.
`verify_signature` checks only the bundle (admission, before any file exists).
`VerifiedTree.read(name)` then returns a signed file's bytes only after
hashing exactly those bytes against the signed digest, so
what a flavor loads is what was signed, even if the file changes later;
`VerifiedTree.recheck()` hashes the whole tree again against the same manifest (the
server's continuous integrity check; the signature is not checked again).

Raises `modeldeploy.params.errors.VerificationError`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import blake3
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from model_signing import hashing, signing
from model_signing._signing import sign_certificate, sign_ec_key, sign_sigstore_pb
from OpenSSL import crypto

from modeldeploy.contract.reasons import (
    FILE_NOT_SIGNED,
    FILES_DIFFER,
    KEY_MISMATCH,
    PRIVATE_KEY_INVALID,
    SIGNATURE_INVALID,
    SIGNATURE_MALFORMED,
    SIGNATURE_MISSING,
    UNSAFE_FILE,
    UNSUPPORTED_SIGNATURE,
    UNTRUSTED_SIGNER,
)
from modeldeploy.contract.trust import SPEC_KEY_POLICY
from modeldeploy.params.errors import VerificationError
from modeldeploy.params.trust import PolicyVerifiers, Trust, key_fingerprint, require_ec_key
from modeldeploy.params.trust import load_public_key as load_public_key
from modeldeploy.params.trust import public_key_pem as public_key_pem

fingerprint = key_fingerprint  # `sha256:` + sha256 of the public key's PEM (model_signing's key hint)

SIGNATURE = "model.sig"
VERIFIED_MANIFEST = "verified-manifest.json"  # written by earlier fetch versions; never signed, never trusted
FETCH_MARKER = ".modeldeploy-fetch.json"  # what fetch installed (see fetch.py); never signed, never trusted
UNSIGNED = (SIGNATURE, VERIFIED_MANIFEST, FETCH_MARKER)
MAX_SIGNATURE_BYTES = 16 << 20
MAX_CHAIN = 10  # certificates in a bundle's chain
HASH_TYPES = ("sha256", "blake2", "blake3")  # model_signing's hashing_algorithm choices
RECORDED_HASH_TYPES = {"sha256": "sha256", "blake2b": "blake2", "blake3": "blake3"}  # as bundles name them
BUNDLE_MEDIA_PREFIX = "application/vnd.dev.sigstore.bundle"
IN_TOTO_PAYLOAD = "application/vnd.in-toto+json"

CURVES: dict[str, ec.EllipticCurve] = {"p256": ec.SECP256R1(), "p384": ec.SECP384R1()}


@dataclass(frozen=True)
class VerifiedModel:
    """What a successful verification vouches for."""

    key_fingerprint: str
    manifest_digest: str
    files: dict[str, str] = field(default_factory=dict)
    signer: str = ""  # the key's fingerprint, or the signing certificate's subject (RFC 4514)
    issuer: str | None = None  # the signing certificate's issuer
    trusted_by: str = SPEC_KEY_POLICY  # which policies' signers admitted it
    hash_algorithm: str = "sha256"  # e.g. sha256, blake3, "sha256 shards"
    signed_policies: tuple[str, ...] = ()  # names in the signed policies.yaml (fetch fills them in)


def generate_key(curve: str = "p256") -> ec.EllipticCurvePrivateKey:
    """A new EC private key on `curve` (`p256` or `p384`)."""
    return ec.generate_private_key(CURVES[curve])


def private_key_pem(key: ec.EllipticCurvePrivateKey, password: str | None = None) -> bytes:
    """PKCS#8 PEM of `key`, encrypted when a password is given."""
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


def load_private_key(path: str | Path, password: str | None = None) -> ec.EllipticCurvePrivateKey:
    """Read a PEM EC private key (decrypting it with `password`).

    Raises:
        VerificationError: `PrivateKeyInvalid`: unreadable, wrong or missing password, not EC,
            or an unsupported curve.
    """
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password.encode() if password else None)
    except TypeError as err:  # a password for an unencrypted key, or none for an encrypted one
        needs = "needs a password" if password is None else "is not encrypted; give no password"
        raise VerificationError(PRIVATE_KEY_INVALID, f"private key {path} {needs}") from err
    except (OSError, ValueError, UnsupportedAlgorithm) as err:
        raise VerificationError(
            PRIVATE_KEY_INVALID, f"cannot read private key {path} (not PEM, or a wrong password)"
        ) from err
    require_ec_key(key, f"private key {path}", PRIVATE_KEY_INVALID)
    assert isinstance(key, ec.EllipticCurvePrivateKey)  # checked just above
    return key


def sign(
    model_dir: str | Path,
    private_key_path: str | Path,
    signature_path: str | Path | None = None,
    password: str | None = None,
    *,
    hash_algorithm: str = "sha256",
    shard_size: int | None = None,
    signing_certificate: str | Path | None = None,
    certificate_chain: Iterable[str | Path] = (),
) -> Path:
    """Sign every file of `model_dir` except the `UNSIGNED` names and the signature itself.

    Args:
        model_dir: the parameters directory.
        private_key_path: PEM EC private key.
        signature_path: where to write the bundle; default `model_dir/model.sig`.
        password: the private key's password, if it is encrypted (key method only).
        hash_algorithm: `sha256`, `blake2` or `blake3` (blake3 has no sharded form).
        shard_size: hash files in shards of this many bytes; default whole files.
        signing_certificate: sign with the certificate method: the key's certificate (PEM).
        certificate_chain: the CA certificates to put in the bundle with it (PEM files; at least one).

    Returns:
        The path of the written signature bundle.

    Raises:
        VerificationError: `PrivateKeyInvalid`, `UnsupportedSignature` (a hash choice
            model_signing cannot make), or `UnsafeFile` for a symlink or special file.
    """
    model_dir = Path(model_dir)
    signature = Path(signature_path) if signature_path else model_dir / SIGNATURE
    if hash_algorithm not in HASH_TYPES:
        raise VerificationError(UNSUPPORTED_SIGNATURE, f"cannot hash with {hash_algorithm!r}; choose one of "
                                f"{', '.join(HASH_TYPES)}")
    if shard_size is not None and hash_algorithm == "blake3":
        raise VerificationError(UNSUPPORTED_SIGNATURE, "model_signing has no sharded blake3 (blake3 already hashes "
                                "a whole file in parallel): sign blake3 without a shard size, or shards with "
                                "sha256 or blake2")
    chain = list(certificate_chain)
    if signing_certificate is not None and password:
        raise VerificationError(PRIVATE_KEY_INVALID, "the certificate method takes an unencrypted private key")
    if signing_certificate is not None and not chain:
        raise VerificationError(PRIVATE_KEY_INVALID, "model_signing's certificate method needs a certificate "
                                "chain: give the issuing CA certificates (e.g. the root) as the chain")
    load_private_key(private_key_path, password)
    ignored = _ignored(model_dir, signature)
    _tree_files(model_dir, ignored)  # refuse links and special files with a reason
    hashing_config = hashing.Config()
    if shard_size is None:
        hashing_config.use_file_serialization(hashing_algorithm=hash_algorithm)  # type: ignore[arg-type]
    else:
        hashing_config.use_shard_serialization(hashing_algorithm=hash_algorithm,  # type: ignore[arg-type]
                                               shard_size=shard_size)
    hashing_config.set_ignored_paths(paths=ignored, ignore_git_paths=False)
    config = signing.Config()
    if signing_certificate is None:
        config.use_elliptic_key_signer(
            private_key=private_key_path,
            password=password.encode() if password else None,  # type: ignore[arg-type]
        )
    else:
        try:
            config.use_certificate_signer(private_key=private_key_path, signing_certificate=signing_certificate,
                                          certificate_chain=chain)
        except ValueError as err:  # the certificate is not the key's
            raise VerificationError(PRIVATE_KEY_INVALID, f"cannot sign with {signing_certificate}: {err}") from err
    config.set_hashing_config(hashing_config).sign(model_dir, signature)
    return signature


@dataclass(frozen=True)
class _Statement:
    """A bundle's in-toto statement and signer material (authentic only once the signature verified)."""

    root_digest: str
    files: dict[str, str]
    serialization: dict[str, Any]  # method, hash_type (one of HASH_TYPES), shard_size
    key_hint: str  # key method: sha256 of the signer's public key PEM (may be absent)
    chain: tuple[x509.Certificate, ...] = ()  # certificate method: the signing certificate first

    @property
    def hash_algorithm(self) -> str:
        return f"{self.serialization['hash_type']}{' shards' if self.serialization['method'] == 'shards' else ''}"

    @property
    def names(self) -> set[str]:
        """The signed file names (shard identifiers `name:start:end` reduced to `name`)."""
        if self.serialization["method"] == "shards":
            return {identifier.rsplit(":", 2)[0] for identifier in self.files}
        return set(self.files)


class VerifiedTree:
    """A parameters directory whose signature verified: read signed files as verified bytes, re-hash the tree."""

    def __init__(self, root: Path, verified: VerifiedModel, statement: _Statement, ignored: list[str]) -> None:
        self.root = root
        self.verified = verified
        self._statement = statement
        self._names = statement.names
        self._ignored = ignored

    @property
    def names(self) -> list[str]:
        """Every signed file name, sorted."""
        return sorted(self._names)

    def read(self, name: str) -> bytes:
        """The bytes of the signed file `name`, hashed in memory against the signed digest.

        Raises:
            VerificationError: `UnsafeFile` (absolute, `..`, or through a symlink),
                `FileNotSigned` (not in the signed manifest), `FilesDiffer` (changed since).
        """
        relative = _signed_name(name)
        if relative not in self._names:
            raise VerificationError(FILE_NOT_SIGNED, f"{name!r} is not a file of the signed manifest", [name])
        data = _read_beneath(self.root, relative)
        signed = self._statement.files
        if self._statement.serialization["method"] == "files":
            expected = {relative: signed[relative]}
        else:
            expected = {k: v for k, v in signed.items() if k.rsplit(":", 2)[0] == relative}
        if _digests(relative, data, self._statement.serialization) != expected:
            raise VerificationError(FILES_DIFFER, f"{relative} changed after it was verified", [relative])
        return data

    def recheck(self) -> None:
        """Hash the whole tree again against the signed manifest (the signature verified already).

        Raises:
            VerificationError: `FilesDiffer` naming the changed, extra and missing files (or the
                tree can no longer be read).
        """
        try:
            _check_files(self.root, self._statement, self._ignored)
        except OSError as err:  # a file vanished or became unreadable under the walk
            raise VerificationError(FILES_DIFFER, f"the tree cannot be read again: {err}") from err


def verify(
    model_dir: str | Path,
    trust: Trust | str | Path,
    signature_path: str | Path | None = None,
) -> VerifiedModel:
    """Check the signature against the trust, then every file against the signed manifest.

    See `verify_tree`; this returns only what was verified.
    """
    return verify_tree(model_dir, trust, signature_path).verified


def trust_of(trust: Trust | str | Path) -> Trust:
    """`trust` itself, or the one-key trust of a PEM public key file (`Trust.from_public_key`).

    Raises:
        VerificationError: `PublicKeyInvalid` for an unreadable key file.
    """
    return trust if isinstance(trust, Trust) else Trust.from_public_key(trust)


def verify_tree(
    model_dir: str | Path,
    trust: Trust | str | Path,
    signature_path: str | Path | None = None,
) -> VerifiedTree:
    """Verify `model_dir` against its signature made by a trusted signer (see the module docstring).

    Args:
        model_dir: the parameters directory.
        trust: the trusted signers, or the path of the one PEM EC public key to trust.
        signature_path: the bundle; default `model_dir/model.sig`.

    Returns:
        The verified tree: who signed, the manifest digest, the signed digests, and `read()`.

    Raises:
        VerificationError: `SignatureMissing`, `SignatureMalformed`, `UnsupportedSignature`,
            `SignatureInvalid`, `KeyMismatch`, `UntrustedSigner`, `PublicKeyInvalid`,
            `TrustInvalid` or `FilesDiffer` (with the file names).
    """
    model_dir = Path(model_dir)
    signature = Path(signature_path) if signature_path else model_dir / SIGNATURE
    trusted = trust_of(trust)
    statement, verified = _authenticate(_read_signature(signature), trusted, signature.name)
    ignored = _ignored(model_dir, signature)
    _check_files(model_dir, statement, ignored)
    return VerifiedTree(model_dir, verified, statement, ignored)


def _check_files(model_dir: Path, statement: _Statement, ignored: list[str]) -> None:
    """Every file of `model_dir` (but the ignored ones) is in the signed manifest with its signed digest.

    Raises:
        VerificationError: `FilesDiffer` naming the changed, extra (even if ignored) or missing files.
    """
    present = _tree_files(model_dir, ignored)
    if statement.serialization["method"] == "shards":  # an empty file has no shard to sign
        present = {name for name in present if (model_dir / name).stat().st_size}
    actual = _hash(model_dir, _hashing_config(statement.serialization, ignored))
    if present != statement.names or actual != statement.files:
        raise _files_differ(statement, actual, present)


def verify_signature(data: bytes, trust: Trust, name: str = SIGNATURE) -> VerifiedModel:
    """Verify only a signature bundle against the trust (no files: what admission can check).

    Checks the DSSE envelope (and, for the certificate method, the chain and the leaf's
    constraints) with model_signing's verifiers; `files` are the signed digests.

    Raises:
        VerificationError: as `verify_tree`, except `FilesDiffer`.
    """
    if len(data) > MAX_SIGNATURE_BYTES:
        raise VerificationError(SIGNATURE_MALFORMED, f"{name} is larger than {MAX_SIGNATURE_BYTES} bytes")
    return _authenticate(data, trust, name)[1]


def _authenticate(data: bytes, trust: Trust, name: str) -> tuple[_Statement, VerifiedModel]:
    """The bundle's statement once, for every policy, one of its signers verified the bundle."""
    statement = _parse_bundle(data, name)
    with tempfile.TemporaryDirectory(prefix="modeldeploy-verify-") as private:
        work = Path(private)
        bundle = _upstream_bundle(data, work, name)
        if statement.chain:
            leaf = _signing_certificate(statement.chain[0])
            signer, issuer = leaf.subject.rfc4514_string(), leaf.issuer.rfc4514_string()
            key = fingerprint(leaf.public_key())  # type: ignore[arg-type]  # an EC key: checked above
            trusted_by = [_accepted_certificate(policy, leaf, bundle, work) for policy in trust.policies]
        else:
            accepted = [_accepted_key(policy, statement, bundle, work) for policy in trust.policies]
            signer, issuer, key = accepted[0][1], None, accepted[0][1]
            trusted_by = [by for by, _ in accepted]
    verified = VerifiedModel(
        key, f"sha256:{statement.root_digest}", statement.files, signer, issuer, ", ".join(trusted_by),
        statement.hash_algorithm,
    )
    return statement, verified


def _upstream_bundle(data: bytes, work: Path, name: str) -> Any:
    """model_signing's own reading of the bundle bytes (its verifiers take nothing else)."""
    copy = work / SIGNATURE
    copy.write_bytes(data)  # the very bytes `_parse_bundle` read
    try:
        return sign_sigstore_pb.Signature.read(copy)
    except Exception as err:  # any parse failure of upstream's reader
        raise VerificationError(
            SIGNATURE_MALFORMED, f"{name} was refused by model_signing's reader ({type(err).__name__})"
        ) from err


def _pem_file(work: Path, pem: bytes) -> Path:
    """`pem` in a file of `work` (model_signing's verifiers read keys and roots from paths)."""
    path = work / f"trusted-{hashlib.sha256(pem).hexdigest()[:16]}.pem"
    path.write_bytes(pem)
    return path


def _upstream_accepts(verifier: Any, bundle: Any) -> bool:
    """Whether model_signing's `verifier` accepts the bundle's signature and statement.

    Raises:
        OpenSSL.crypto.X509StoreContextError: the certificate chain does not reach its roots.
    """
    try:
        verifier.verify(bundle)
    except (InvalidSignature, ValueError, KeyError, TypeError):  # whatever its words (tests pin the reason)
        return False
    return True


def _accepted_key(
    policy: PolicyVerifiers, statement: _Statement, bundle: Any, work: Path,
) -> tuple[str, str]:
    """(trusted_by, fingerprint) of the policy's key that verifies a key-method bundle.

    Raises:
        VerificationError: `UntrustedSigner` naming the key that signed (`KeyMismatch` for
            the spec's one key), `SignatureInvalid` when the named key's signature is wrong.
    """
    hint = f"sha256:{statement.key_hint}" if statement.key_hint else None
    candidates = [key for key in policy.keys if hint is None or key.fingerprint == hint]
    if not candidates:
        made_by = f"the signature was made by key {hint}"
        if not policy.keys:
            roots = ", ".join(roots.signer for roots in policy.certificates)
            raise VerificationError(UNTRUSTED_SIGNER, f"{made_by}, but {policy.describe()} trusts only "
                                    f"certificate signers ({roots}), no key")
        if policy.policy == SPEC_KEY_POLICY:
            raise VerificationError(KEY_MISMATCH, f"{made_by}, not by the trusted key {policy.keys[0].fingerprint}")
        trusted = ", ".join(f"{key.signer} {key.fingerprint}" for key in policy.keys)
        raise VerificationError(UNTRUSTED_SIGNER, f"{made_by}, which {policy.describe()} does not trust "
                                f"(trusted: {trusted})")
    for key in candidates:
        if _upstream_accepts(sign_ec_key.Verifier(_pem_file(work, key.pem)), bundle):
            return policy.trusted_by(key.signer), key.fingerprint
    tried = ", ".join(f"{key.signer} {key.fingerprint}" for key in candidates)
    raise VerificationError(SIGNATURE_INVALID, f"the signature does not verify with the trusted key {tried} "
                            "(altered after signing?)")


def _signing_certificate(leaf: x509.Certificate) -> x509.Certificate:
    """The bundle's signing certificate, if it holds a supported EC key and may sign.

    Raises:
        VerificationError: `UnsupportedSignature` (not an EC key), `UntrustedSigner` (neither
            KeyUsage digitalSignature nor ExtendedKeyUsage codeSigning: model_signing's rule).
    """
    who = f"the signing certificate {leaf.subject.rfc4514_string()} (issuer {leaf.issuer.rfc4514_string()})"
    require_ec_key(leaf.public_key(), who, UNSUPPORTED_SIGNATURE)
    extensions = leaf.extensions
    with contextlib.suppress(x509.ExtensionNotFound):
        if extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            return leaf
    with contextlib.suppress(x509.ExtensionNotFound):
        if ExtendedKeyUsageOID.CODE_SIGNING in extensions.get_extension_for_class(x509.ExtendedKeyUsage).value:
            return leaf
    raise VerificationError(UNTRUSTED_SIGNER, f"{who} may not sign: it has neither KeyUsage digitalSignature nor "
                            "ExtendedKeyUsage codeSigning")


def _names(certificate: x509.Certificate) -> set[str]:
    """A certificate's email, URI and DNS subject alternative names."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(value) for kind in (x509.RFC822Name, x509.UniformResourceIdentifier, x509.DNSName)
            for value in names.get_values_for_type(kind)}


def _accepted_certificate(policy: PolicyVerifiers, leaf: x509.Certificate, bundle: Any, work: Path) -> str:
    """`trusted_by` of the policy's certificate signer whose roots and constraints admit `leaf`.

    Raises:
        VerificationError: `UntrustedSigner` saying, per signer, why not; `SignatureInvalid`
            when the chain is trusted but the signature is not the leaf's.
    """
    subject = leaf.subject.rfc4514_string()
    made_by = f"the signature was made with certificate {subject} (issuer {leaf.issuer.rfc4514_string()})"
    if not policy.certificates:
        keys = ", ".join(f"{key.signer} {key.fingerprint}" for key in policy.keys)
        raise VerificationError(UNTRUSTED_SIGNER, f"{made_by}, but {policy.describe()} trusts only keys ({keys})")
    problems = []
    for roots in policy.certificates:
        try:
            accepted = _upstream_accepts(sign_certificate.Verifier([_pem_file(work, roots.pem)]), bundle)
        except crypto.X509StoreContextError as err:
            problems.append(f"it does not chain to the roots of {roots.signer} ({'; '.join(roots.roots)}: {err})")
            continue
        if not accepted:
            raise VerificationError(SIGNATURE_INVALID, f"{made_by} chains to {roots.signer}, but the signature "
                                    "does not verify with its key (altered after signing?)")
        names = _names(leaf)
        if roots.subjects and subject not in roots.subjects:
            allowed = ", ".join(roots.subjects)
            problems.append(f"its subject {subject} is not one of {roots.signer}'s subjects ({allowed})")
        elif roots.sans and not names & set(roots.sans):
            problems.append(f"none of its names ({', '.join(sorted(names)) or 'none'}) is one of "
                            f"{roots.signer}'s ({', '.join(roots.sans)})")
        else:
            return policy.trusted_by(roots.signer)
    raise VerificationError(UNTRUSTED_SIGNER, f"{made_by}, which {policy.describe()} does not trust: "
                            f"{'; '.join(problems)}")


def seal(model_dir: str | Path, private_key_path: str | Path, public_key_path: str | Path) -> VerifiedModel:
    """Sign MODEL_DIR and verify it in place: a servable directory without a fetch step (tests, benchmarks)."""
    signature = sign(model_dir, private_key_path)
    return verify(model_dir, public_key_path, signature)


def signed_digest(signature_path: str | Path) -> str:
    """`sha256:<root digest>` of the manifest in a signature bundle (not authenticated)."""
    path = Path(signature_path)
    return f"sha256:{_parse_bundle(_read_signature(path), path.name).root_digest}"


def _ignored(model_dir: Path, signature: Path) -> list[str]:
    """Paths (relative to `model_dir`) never part of what is signed."""
    ignored = list(UNSIGNED)
    with contextlib.suppress(ValueError):  # a signature outside the directory
        ignored.append(signature.resolve().relative_to(model_dir.resolve()).as_posix())
    return ignored


def _read_signature(signature: Path) -> bytes:
    try:
        with signature.open("rb") as src:
            data = src.read(MAX_SIGNATURE_BYTES + 1)
    except FileNotFoundError as err:
        raise VerificationError(SIGNATURE_MISSING, f"no signature at {signature}") from err
    except OSError as err:
        raise VerificationError(SIGNATURE_MISSING, f"cannot read the signature {signature}: {err.strerror}") from err
    if len(data) > MAX_SIGNATURE_BYTES:
        raise VerificationError(SIGNATURE_MALFORMED, f"{signature.name} is larger than {MAX_SIGNATURE_BYTES} bytes")
    return data


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise VerificationError(SIGNATURE_MALFORMED, f"{what} is missing or not an object")
    return value


def _parse_bundle(data: bytes, name: str) -> _Statement:
    """Check a bundle's structure and read its statement, without checking the signature.

    Raises:
        VerificationError: `SignatureMalformed` (not a bundle), `UnsupportedSignature`
            (a bundle of a kind this deployment does not verify).
    """
    try:
        bundle = _object(json.loads(data), name)
        envelope = bundle.get("dsseEnvelope")
        material = bundle.get("verificationMaterial")
        if not str(bundle.get("mediaType", "")).startswith(BUNDLE_MEDIA_PREFIX):
            raise VerificationError(SIGNATURE_MALFORMED, f"{name} is not a Sigstore bundle (mediaType)")
        if material is None:
            raise VerificationError(SIGNATURE_MALFORMED, f"{name} has no verificationMaterial")
        material = _object(material, f"{name}: verificationMaterial")
        hint = ""
        chain: tuple[x509.Certificate, ...] = ()
        if "publicKey" in material:
            hint = str(_object(material["publicKey"], f"{name}: publicKey").get("hint", ""))
        elif "x509CertificateChain" in material:
            chain = _chain(material["x509CertificateChain"], name)
        else:
            kinds = sorted(k for k in material if k != "tlogEntries") or ["nothing"]
            raise VerificationError(
                UNSUPPORTED_SIGNATURE,
                f"{name} is signed with {', '.join(kinds)}, not a public key or certificate chain; only the key "
                "and certificate methods (model_signing sign key|certificate, modeldeploy sign) are verified",
            )
        if envelope is None:
            raise VerificationError(
                UNSUPPORTED_SIGNATURE, f"{name} has no DSSE envelope (messageSignature bundles are not supported)"
            )
        envelope = _object(envelope, f"{name}: dsseEnvelope")
        signatures = envelope.get("signatures")
        if not isinstance(signatures, list) or not signatures:
            raise VerificationError(SIGNATURE_MALFORMED, f"{name} has no signatures")
        if len(signatures) > 1:
            raise VerificationError(UNSUPPORTED_SIGNATURE, f"{name} has {len(signatures)} signatures; expected one")
        if envelope.get("payloadType") != IN_TOTO_PAYLOAD:
            raise VerificationError(
                UNSUPPORTED_SIGNATURE, f"{name}: payload type {envelope.get('payloadType')!r} is not in-toto"
            )
        statement = _object(json.loads(base64.b64decode(str(envelope["payload"]), validate=True)), f"{name}: statement")
        predicate = _object(statement["predicate"], f"{name}: predicate")
        serialization_args = _object(predicate["serialization"], f"{name}: serialization")
        files = {}
        for resource in predicate["resources"]:
            files[str(resource["name"])] = str(resource["digest"])
        root = str(statement["subject"][0]["digest"]["sha256"])
    except VerificationError:
        raise
    except RecursionError as err:
        raise VerificationError(SIGNATURE_MALFORMED, f"{name} is nested too deeply to be a bundle") from err
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, binascii.Error) as err:
        raise VerificationError(
            SIGNATURE_MALFORMED, f"{name} is not an OpenSSF Model Signing bundle ({type(err).__name__}: {err})"
        ) from err
    method, hash_type = serialization_args.get("method"), serialization_args.get("hash_type")
    if method not in ("files", "shards"):
        raise VerificationError(UNSUPPORTED_SIGNATURE, f"{name}: unsupported serialization method {method!r}")
    algorithm = RECORDED_HASH_TYPES.get(str(hash_type))
    if algorithm is None or (method == "shards" and algorithm == "blake3"):
        raise VerificationError(UNSUPPORTED_SIGNATURE, f"{name}: unsupported hash type {hash_type!r}")
    serialization_args = {**serialization_args, "hash_type": algorithm}
    if method == "shards":  # a JSON number: upstream writes 100000.0
        shard_size = serialization_args.get("shard_size")
        if isinstance(shard_size, bool) or not isinstance(shard_size, int | float) or shard_size < 1:
            raise VerificationError(SIGNATURE_MALFORMED, f"{name}: shard_size must be a positive integer")
        if int(shard_size) != shard_size:
            raise VerificationError(SIGNATURE_MALFORMED, f"{name}: shard_size must be a positive integer")
        serialization_args = {**serialization_args, "shard_size": int(shard_size)}
    statement_ = _Statement(root, files, serialization_args, hint, chain)
    for signed in statement_.names:
        try:
            if _signed_name(signed) != signed:
                raise ValueError(signed)
        except (ValueError, VerificationError) as err:
            raise VerificationError(SIGNATURE_MALFORMED, f"{name} names an unsafe path {signed!r}") from err
    return statement_


def _chain(value: Any, name: str) -> tuple[x509.Certificate, ...]:
    """The certificates of a bundle's x509CertificateChain (the signing certificate first)."""
    certificates = _object(value, f"{name}: x509CertificateChain").get("certificates")
    if not isinstance(certificates, list) or not certificates:
        raise VerificationError(SIGNATURE_MALFORMED, f"{name}: the certificate chain is empty")
    if len(certificates) > MAX_CHAIN:
        raise VerificationError(SIGNATURE_MALFORMED, f"{name}: a chain of {len(certificates)} certificates "
                                f"(at most {MAX_CHAIN})")
    chain = []
    for index, certificate in enumerate(certificates):
        der = base64.b64decode(str(_object(certificate, f"{name}: certificate")["rawBytes"]), validate=True)
        try:
            chain.append(x509.load_der_x509_certificate(der))
        except ValueError as err:
            raise VerificationError(SIGNATURE_MALFORMED, f"{name}: certificate {index} of the chain is not a DER "
                                    "X.509 certificate") from err
    return tuple(chain)


def _hashing_config(serialization_args: dict[str, Any], ignored: Iterable[str]) -> hashing.Config:
    """The hashing configuration a signature was made with, ignoring only our unsigned paths."""
    algorithm = serialization_args["hash_type"]
    config = hashing.Config()
    if serialization_args["method"] == "files":
        config.use_file_serialization(hashing_algorithm=algorithm)
    else:
        config.use_shard_serialization(hashing_algorithm=algorithm, shard_size=int(serialization_args["shard_size"]))
    return config.set_ignored_paths(paths=list(ignored), ignore_git_paths=False)


def _tree_files(model_dir: Path, ignored: Iterable[str]) -> set[str]:
    """Every regular file under `model_dir` (posix, relative) except the `ignored` ones.

    Raises:
        VerificationError: `FilesDiffer` for a symlink or special file, naming it.
    """
    skip = set(ignored)
    found: set[str] = set()
    if not model_dir.is_dir():
        raise VerificationError(FILES_DIFFER, f"{model_dir} is not a directory")
    for directory, dirs, files in os.walk(model_dir):
        for entry in [*dirs, *files]:
            path = Path(directory, entry)
            relative = path.relative_to(model_dir).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                raise VerificationError(FILES_DIFFER, f"{relative} is a symlink; links are never signed", [relative])
            if stat.S_ISREG(mode):
                if relative not in skip:
                    found.add(relative)
            elif not stat.S_ISDIR(mode):
                raise VerificationError(FILES_DIFFER, f"{relative} is a special file", [relative])
    return found


def _signed_name(name: str) -> str:
    """`name` as a manifest name: relative, posix, no `..`; a backslash is an ordinary character.

    Raises:
        VerificationError: `UnsafeFile` for an absolute path, `..`, or an empty name.
    """
    parts = [part for part in PurePosixPath(name).parts if part not in ("", ".")]
    if not name or name.startswith("/") or not parts or ".." in parts or "\0" in name:
        raise VerificationError(UNSAFE_FILE, f"{name!r} is not a path inside the parameters directory", [name])
    return "/".join(parts)


def _read_beneath(root: Path, relative: str) -> bytes:
    """Read `root/relative` without following a symlink anywhere below `root`."""
    parts = relative.split("/")
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            try:
                child = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            except OSError as err:
                raise VerificationError(
                    UNSAFE_FILE, f"{relative}: {part} is not a directory inside the tree", [relative]
                ) from err
            os.close(fd)
            fd = child
        try:
            leaf = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
        except OSError as err:
            raise VerificationError(
                UNSAFE_FILE, f"{relative} is not a regular file inside the tree (symlink?)", [relative]
            ) from err
    finally:
        os.close(fd)
    with os.fdopen(leaf, "rb") as src:
        if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
            raise VerificationError(UNSAFE_FILE, f"{relative} is not a regular file", [relative])
        return src.read()


def _digest(hash_type: str, data: bytes | memoryview) -> str:
    if hash_type == "sha256":
        return hashlib.sha256(data).hexdigest()
    if hash_type == "blake2":
        return hashlib.blake2b(data).hexdigest()
    return str(blake3.blake3(data).hexdigest())


def _digests(name: str, data: bytes, serialization_args: dict[str, Any]) -> dict[str, str]:
    """The manifest entries of one file's bytes, as the signature's serialization computes them."""
    hash_type = serialization_args["hash_type"]
    if serialization_args["method"] == "files":
        return {name: _digest(hash_type, data)}
    size = int(serialization_args["shard_size"])
    view = memoryview(data)
    starts = range(0, len(data), size)
    return {f"{name}:{s}:{min(s + size, len(data))}": _digest(hash_type, view[s : s + size]) for s in starts}


def _hash(model_dir: Path, config: hashing.Config) -> dict[str, str]:
    """Relative path (or shard) -> hex digest of what is in `model_dir` now."""
    try:
        manifest = config.hash(model_dir)
    except ValueError as err:  # a symlink, a socket, ... (our own walk names them first)
        raise VerificationError(FILES_DIFFER, f"the tree cannot be hashed ({type(err).__name__})") from err
    return {rd.identifier: rd.digest.digest_hex for rd in manifest.resource_descriptors()}


def _by_file(digests: dict[str, str], sharded: bool) -> dict[str, dict[str, str]]:
    """Manifest entries grouped by the file they belong to (a shard `name:start:end` to `name`)."""
    grouped: dict[str, dict[str, str]] = {}
    for identifier, digest in digests.items():
        grouped.setdefault(identifier.rsplit(":", 2)[0] if sharded else identifier, {})[identifier] = digest
    return grouped


def _files_differ(statement: _Statement, actual: dict[str, str], present: set[str]) -> VerificationError:
    """One `FilesDiffer` error naming the changed, extra and missing files (files, never shards)."""
    sharded = statement.serialization["method"] == "shards"
    expected = _by_file(statement.files, sharded)
    found: dict[str, dict[str, str]] = {name: {} for name in present} | _by_file(actual, sharded)
    changed = sorted(name for name in expected.keys() & found.keys() if expected[name] != found[name])
    extra = sorted(found.keys() - expected.keys())
    missing = sorted(expected.keys() - found.keys())
    parts = [
        f"{label} {', '.join(names)}"
        for label, names in (("changed", changed), ("extra", extra), ("missing", missing))
        if names
    ]
    message = f"files do not match the signed manifest: {'; '.join(parts)}"
    return VerificationError(FILES_DIFFER, message, [*changed, *extra, *missing])
