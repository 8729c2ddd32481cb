"""TLS for the admission webhook: a CA and a serving certificate kept in a Secret of the operator's namespace.

`issue` makes a CA and a serving certificate for the webhook Service's DNS names (and any
host of `--webhook-url`); `needs_renewal` says when a stored pair no longer fits (missing,
expiring within `RENEW_BEFORE`, or not covering a name). Every replica reads the same Secret,
so they all serve the same certificate and write the same `caBundle`. With cert-manager, the
operator instead serves the files it mounts (`--webhook-cert-dir`) and patches nothing.
Pure functions over bytes; the Secret and the webhook configurations are written by the handlers.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Mapping, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_KEY = "ca.crt"
CERT_KEY = "tls.crt"
PRIVATE_KEY = "tls.key"
VALIDITY = datetime.timedelta(days=365)
RENEW_BEFORE = datetime.timedelta(days=30)


def service_names(service: str, namespace: str) -> list[str]:
    """The DNS names the API server may use for a Service."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _alternative_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def issue(hosts: Sequence[str], now: datetime.datetime) -> dict[str, bytes]:
    """A new CA and a serving certificate for `hosts` (DNS names or IP addresses), as Secret data."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("modeldeploy-webhook-ca")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0])).issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName(_alternative_names(hosts)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return {
        CA_KEY: ca.public_bytes(serialization.Encoding.PEM),
        CERT_KEY: certificate.public_bytes(serialization.Encoding.PEM),
        PRIVATE_KEY: key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()),
    }


def needs_renewal(data: Mapping[str, bytes], hosts: Sequence[str], now: datetime.datetime) -> bool:
    """Whether the stored pair is missing, unreadable, expiring within RENEW_BEFORE, or misses a host."""
    if not all(data.get(key) for key in (CA_KEY, CERT_KEY, PRIVATE_KEY)):
        return True
    try:
        certificate = x509.load_pem_x509_certificate(data[CERT_KEY])
        covered = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return True
    if certificate.not_valid_after_utc - now < RENEW_BEFORE:
        return True
    return any(name not in covered for name in _alternative_names(hosts))
