"""A throw-away PKI for one local control plane, made with ``cryptography``.

Owns key and certificate generation only: a cluster CA (also the client CA), the
API server's serving certificate, client certificates for any user and groups, and the
service-account signing key. Writes PEM files; never talks to a server.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)
SERVICE_IP = "10.0.0.1"
SERVING_DNS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key on disk."""

    cert: Path
    key: Path


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(pair: KeyPair, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> KeyPair:
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.touch(mode=0o600)
    pair.key.write_bytes(_key_pem(key))
    return pair


def _name(common_name: str, organizations: list[str] | tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    return x509.Name([*attrs, x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
    )


def _load(pair: KeyPair) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    key = serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TypeError(f"{pair.key} is not an EC key")
    return cert, key


CA_USAGE = x509.KeyUsage(
    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
    key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False, decipher_only=False,
)


def _ca_cert(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePublicKey,
             issuer_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return (
        _builder(subject, issuer, key)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(CA_USAGE, critical=True)
        .sign(issuer_key, hashes.SHA256())
    )


def create_ca(directory: Path, common_name: str = "modeldeploy-devcluster-ca", stem: str = "ca") -> KeyPair:
    """A self-signed CA (``<stem>.crt``/``.key``) that signs serving and client certificates."""
    key = _new_key()
    name = _name(common_name)
    cert = _ca_cert(name, name, key.public_key(), key)
    return _write(KeyPair(directory / f"{stem}.crt", directory / f"{stem}.key"), cert, key)


def create_intermediate_ca(ca: KeyPair, directory: Path, common_name: str) -> KeyPair:
    """A CA (``<common_name>.crt``/``.key``) issued by ``ca``, to sign leaves below it."""
    ca_cert, ca_key = _load(ca)
    key = _new_key()
    cert = _ca_cert(_name(common_name), ca_cert.subject, key.public_key(), ca_key)
    return _write(KeyPair(directory / f"{common_name}.crt", directory / f"{common_name}.key"), cert, key)


def _issue(ca: KeyPair, out: KeyPair, subject: x509.Name, usage: ExtendedKeyUsageOID,
           san: x509.SubjectAlternativeName | None = None) -> KeyPair:
    ca_cert, ca_key = _load(ca)
    key = _new_key()
    builder = (
        _builder(subject, ca_cert.subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    return _write(out, builder.sign(ca_key, hashes.SHA256()), key)


def create_server_cert(ca: KeyPair, out: KeyPair, common_name: str, ips: list[str], dns: tuple[str, ...] = ()) -> KeyPair:
    """A serving certificate for ``ips`` and ``dns`` names, signed by ``ca``."""
    addresses = sorted({ipaddress.ip_address(ip) for ip in ips}, key=str)
    san = x509.SubjectAlternativeName([*(x509.DNSName(name) for name in dns), *(x509.IPAddress(ip) for ip in addresses)])
    return _issue(ca, out, _name(common_name), ExtendedKeyUsageOID.SERVER_AUTH, san)


def create_serving_cert(ca: KeyPair, directory: Path, *hosts: str) -> KeyPair:
    """The API server's certificate, valid for ``hosts`` and the in-cluster names."""
    out = KeyPair(directory / "apiserver.crt", directory / "apiserver.key")
    return create_server_cert(ca, out, "kube-apiserver", [*hosts, SERVICE_IP], SERVING_DNS)


def client_cert_paths(directory: Path, user: str, groups: list[str] | tuple[str, ...] = ()) -> KeyPair:
    """Where the client certificate of ``user`` in ``groups`` lives (one file per identity)."""
    stem = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in "+".join([user, *groups]))
    return KeyPair(directory / f"{stem}.crt", directory / f"{stem}.key")


def create_client_cert(ca: KeyPair, directory: Path, user: str, groups: list[str] | tuple[str, ...] = ()) -> KeyPair:
    """A client certificate: the API server reads the user from CN and groups from O."""
    out = client_cert_paths(directory, user, groups)
    return _issue(ca, out, _name(user, groups), ExtendedKeyUsageOID.CLIENT_AUTH)


def create_service_account_key(directory: Path) -> KeyPair:
    """The key pair the API server signs (and checks) service-account tokens with.

    ``cert`` holds the public key (PEM SubjectPublicKeyInfo), not a certificate.
    """
    key = _new_key()
    pair = KeyPair(directory / "sa.pub", directory / "sa.key")
    pair.key.touch(mode=0o600)
    pair.key.write_bytes(_key_pem(key))
    pair.cert.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return pair


def create_signing_cert(ca: KeyPair, directory: Path, common_name: str, email: str | None = None) -> KeyPair:
    """A code-signing certificate (model-signing's certificate method), with an email SAN if given."""
    out = KeyPair(directory / f"{common_name}.crt", directory / f"{common_name}.key")
    san = x509.SubjectAlternativeName([x509.RFC822Name(email)]) if email else None
    return _issue(ca, out, _name(common_name), ExtendedKeyUsageOID.CODE_SIGNING, san)
