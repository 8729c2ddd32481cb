"""The trusted signers a signature is verified against: the contract's `TrustBundle`, checked and loaded.

A `Trust` holds, per policy, the bundle's EC public keys (with their fingerprints) and
certificate roots (with the subject and SAN constraints), all read and checked once.
`signing.verify_signature` authenticates a bundle against it with model_signing's verifiers;
nothing here reads a model or imports model_signing.

```
Trust.load(path)                   trust.json (a TrustBundle), as the operator renders it
Trust.from_bundle(bundle)          a TrustBundle already in memory (admission)
Trust.from_public_key(path)        --public-key: policy spec.parameters.publicKey, one key
Trust.from_roots(path, ...)        verify --certificate-chain: one certificate signer
```
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import ValidationError

from modeldeploy.contract.reasons import PUBLIC_KEY_INVALID, TRUST_INVALID
from modeldeploy.contract.trust import (
    SPEC_KEY_POLICY,
    PolicyTrust,
    TrustBundle,
    TrustedCertificate,
    TrustedSigner,
)
from modeldeploy.contract.validation import error_lines
from modeldeploy.params.errors import VerificationError

SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # model_signing's
ROOTS_POLICY = "--certificate-chain"  # the policy of `modeldeploy verify --certificate-chain`
LOCAL_POLICIES = (SPEC_KEY_POLICY, ROOTS_POLICY)  # policies that are no ModelTrustPolicy


def public_key_pem(key: ec.EllipticCurvePublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM of `key` (the canonical form model_signing hashes)."""
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """`sha256:` + the hex sha256 of the key's SubjectPublicKeyInfo PEM: model_signing's key hint."""
    return f"sha256:{hashlib.sha256(public_key_pem(key)).hexdigest()}"


def key_kind(key: object) -> str:
    """`RSA`, `Ed25519`, `EllipticCurve`, ...: a key's algorithm, for messages."""
    return type(key).__name__.removeprefix("_").replace("PublicKey", "").replace("PrivateKey", "") or "unknown"


def require_ec_key(key: object, what: str, reason: str) -> None:
    """Refuse anything but an EC key (public or private) on a curve model_signing supports.

    Raises:
        VerificationError: with `reason`, naming `what` and why.
    """
    if not isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        raise VerificationError(reason, f"{what} is an {key_kind(key)} key, not an elliptic-curve (EC) key")
    if key.curve.name not in SUPPORTED_CURVES:
        raise VerificationError(
            reason, f"{what} is on curve {key.curve.name}; supported curves: {', '.join(SUPPORTED_CURVES)}"
        )


def parse_public_key(pem: bytes, what: str, reason: str) -> ec.EllipticCurvePublicKey:
    """A PEM EC public key on a supported curve.

    Raises:
        VerificationError: with `reason` when it is not PEM, not EC, or on another curve.
    """
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm) as err:
        raise VerificationError(reason, f"{what} is not a PEM public key ({err})") from err
    require_ec_key(key, what, reason)
    assert isinstance(key, ec.EllipticCurvePublicKey)  # checked just above
    return key


def load_public_key(path: str | Path) -> ec.EllipticCurvePublicKey:
    """Read a PEM EC public key file.

    Raises:
        VerificationError: `PublicKeyInvalid` when it is missing, not PEM, not EC, or on
            another curve than P-256, P-384 or P-521.
    """
    try:
        pem = Path(path).read_bytes()
    except OSError as err:
        raise VerificationError(PUBLIC_KEY_INVALID, f"cannot read public key {path}: {err.strerror}") from err
    return parse_public_key(pem, f"public key {path}", PUBLIC_KEY_INVALID)


@dataclass(frozen=True)
class TrustedKey:
    """One trusted EC key."""

    signer: str
    fingerprint: str
    pem: bytes


@dataclass(frozen=True)
class TrustedRoots:
    """One trusted set of roots, with the constraints on the signing certificate."""

    signer: str
    pem: bytes
    roots: tuple[str, ...]  # the roots' subjects, for messages
    subjects: tuple[str, ...]
    sans: tuple[str, ...]


@dataclass(frozen=True)
class PolicyVerifiers:
    """One policy: a signature must verify with one of these signers."""

    policy: str
    keys: tuple[TrustedKey, ...]
    certificates: tuple[TrustedRoots, ...]

    def describe(self) -> str:
        """`ModelTrustPolicy NAME`, or the local policy's own name, for messages."""
        return self.policy if self.policy in LOCAL_POLICIES else f"ModelTrustPolicy {self.policy}"

    def trusted_by(self, signer: str) -> str:
        """The evidence that `signer` of this policy admitted a signature (status `trustedBy`)."""
        if self.policy == SPEC_KEY_POLICY:
            return SPEC_KEY_POLICY
        if self.policy == ROOTS_POLICY:
            return f"{ROOTS_POLICY} {signer}"
        return f"ModelTrustPolicy/{self.policy} signer {signer}"


class Trust:
    """Every policy a signature must satisfy (see `modeldeploy.contract.trust`)."""

    def __init__(self, policies: tuple[PolicyVerifiers, ...]) -> None:
        if not policies:
            raise VerificationError(TRUST_INVALID, "the trust names no policy, so nothing could be verified")
        self.policies = policies

    @classmethod
    def from_bundle(cls, bundle: TrustBundle) -> Trust:
        """Verifiers for every signer of `bundle`.

        Raises:
            VerificationError: `TrustInvalid` for a key or roots that cannot be read.
        """
        return cls(tuple(_policy(policy) for policy in bundle.policies))

    @classmethod
    def load(cls, path: str | Path) -> Trust:
        """A `trust.json` file (the contract's `TrustBundle`).

        Raises:
            VerificationError: `TrustInvalid`: unreadable, not a TrustBundle, or bad PEM.
        """
        try:
            bundle = TrustBundle.model_validate_json(Path(path).read_bytes())
        except OSError as err:
            raise VerificationError(TRUST_INVALID, f"cannot read the trust file {path}: {err.strerror}") from err
        except ValidationError as err:
            raise VerificationError(TRUST_INVALID, f"{path}: {'; '.join(error_lines(err))}") from None
        return cls.from_bundle(bundle)

    @classmethod
    def from_public_key(cls, path: str | Path) -> Trust:
        """The one-key trust of `--public-key`: policy `spec.parameters.publicKey`, signer the file's name.

        Raises:
            VerificationError: `PublicKeyInvalid` for a key file that cannot be read.
        """
        pem = public_key_pem(load_public_key(path)).decode()
        return cls._one(SPEC_KEY_POLICY, TrustedSigner(name=Path(path).name, public_key_pem=pem))

    @classmethod
    def from_roots(cls, path: str | Path, subjects: tuple[str, ...] = (), sans: tuple[str, ...] = ()) -> Trust:
        """One certificate signer: the PEM roots in `path`, within `subjects` and `sans` if given.

        Raises:
            VerificationError: `TrustInvalid` when the file cannot be read or holds no certificate.
        """
        try:
            pem = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise VerificationError(TRUST_INVALID, f"cannot read the roots {path}: {err}") from err
        if not pem.strip():
            raise VerificationError(TRUST_INVALID, f"the roots {path} are empty")
        certificate = TrustedCertificate(roots_pem=pem, subjects=subjects, sans=sans)
        return cls._one(ROOTS_POLICY, TrustedSigner(name=Path(path).name, certificate=certificate))

    @classmethod
    def _one(cls, policy: str, signer: TrustedSigner) -> Trust:
        return cls.from_bundle(TrustBundle(policies=(PolicyTrust(policy=policy, signers=(signer,)),)))


def _policy(policy: PolicyTrust) -> PolicyVerifiers:
    keys, certificates = [], []
    for signer in policy.signers:
        where = f"signer {signer.name} of {policy.policy}"
        if signer.public_key_pem is not None:
            key = parse_public_key(signer.public_key_pem.encode(), where, TRUST_INVALID)
            keys.append(TrustedKey(signer.name, key_fingerprint(key), public_key_pem(key)))
        else:
            assert signer.certificate is not None  # a signer is exactly one kind
            roots = _certificates(signer.certificate.roots_pem, where)
            certificates.append(TrustedRoots(
                signer.name, b"".join(root.public_bytes(serialization.Encoding.PEM) for root in roots),
                tuple(root.subject.rfc4514_string() for root in roots),
                signer.certificate.subjects, signer.certificate.sans,
            ))
    return PolicyVerifiers(policy.policy, tuple(keys), tuple(certificates))


def _certificates(pem: str, where: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem.encode())
    except ValueError as err:
        raise VerificationError(TRUST_INVALID, f"{where}: the roots are not PEM certificates ({err})") from err
