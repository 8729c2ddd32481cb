"""The trusted signers a signature is verified against: the contract's `TrustBundle`, checked and loaded.

A `Trust` holds, per policy, the bundle's EC public keys (with their fingerprints) and
certificate roots (with the subject and SAN constraints), all read and checked once.
`signing.verify_signature` authenticates a bundle against it with model_signing's verifiers;
nothing here reads a model or imports model_signing. `Trust.from_public_key` is the one-key
trust of `--public-key` (policy `spec.parameters.publicKey`).
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

from modeldeploy.contract.reasons import TRUST_INVALID
from modeldeploy.contract.trust import SPEC_KEY_POLICY, PolicyTrust, TrustBundle, TrustedSigner
from modeldeploy.contract.validation import error_lines
from modeldeploy.params.errors import VerificationError

SUPPORTED_CURVES = ("secp256r1", "secp384r1", "secp521r1")


def key_fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """`sha256:` + the hex sha256 of the key's SubjectPublicKeyInfo PEM: model_signing's key hint."""
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"sha256:{hashlib.sha256(pem).hexdigest()}"


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
        return self.policy if self.policy == SPEC_KEY_POLICY else f"ModelTrustPolicy {self.policy}"


class Trust:
    """Every policy a signature must satisfy (see `modeldeploy.contract.trust`)."""

    def __init__(self, policies: tuple[PolicyVerifiers, ...]) -> None:
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
        """A `trust.json` file (the contract's `TrustBundle`)."""
        try:
            bundle = TrustBundle.model_validate_json(Path(path).read_bytes())
        except OSError as err:
            raise VerificationError(TRUST_INVALID, f"cannot read the trust file {path}: {err.strerror}") from err
        except ValidationError as err:
            raise VerificationError(TRUST_INVALID, f"{path}: {'; '.join(error_lines(err))}") from None
        return cls.from_bundle(bundle)

    @classmethod
    def from_public_key(cls, key: ec.EllipticCurvePublicKey, name: str) -> Trust:
        """The one-key trust of `--public-key` / `spec.parameters.publicKey`."""
        pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
        signer = TrustedSigner(name=name, public_key_pem=pem)
        return cls.from_bundle(TrustBundle(policies=(PolicyTrust(policy=SPEC_KEY_POLICY, signers=(signer,)),)))


def _policy(policy: PolicyTrust) -> PolicyVerifiers:
    keys, certificates = [], []
    for signer in policy.signers:
        where = f"signer {signer.name} of {policy.policy}"
        if signer.public_key_pem is not None:
            key = _public_key(signer.public_key_pem, where)
            pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            keys.append(TrustedKey(signer.name, key_fingerprint(key), pem))
        else:
            assert signer.certificate is not None  # a signer is exactly one kind
            roots = _certificates(signer.certificate.roots_pem, where)
            certificates.append(TrustedRoots(
                signer.name, signer.certificate.roots_pem.encode(), tuple(r.subject.rfc4514_string() for r in roots),
                signer.certificate.subjects, signer.certificate.sans,
            ))
    return PolicyVerifiers(policy.policy, tuple(keys), tuple(certificates))


def _public_key(pem: str, where: str) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, UnsupportedAlgorithm) as err:
        raise VerificationError(TRUST_INVALID, f"{where}: not a PEM public key ({err})") from err
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in SUPPORTED_CURVES:
        raise VerificationError(TRUST_INVALID, f"{where}: not an EC public key on P-256, P-384 or P-521")
    return key


def _certificates(pem: str, where: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem.encode())
    except ValueError as err:
        raise VerificationError(TRUST_INVALID, f"{where}: the roots are not PEM certificates ({err})") from err
