"""A test PKI for the certificate method, and trust bundles built from keys and roots.

```
root (trusted)  ── intermediate ── release    code signing, SAN release@example.com
                ├─ intern                     code signing, SAN intern@example.com
                └─ server                     server auth only: may not sign models
rogue (untrusted) ── impostor                 code signing, subject CN=release like the real one
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from devcluster import pki
from devcluster.iris import Keys
from modeldeploy.contract.trust import PolicyTrust, TrustBundle, TrustedCertificate, TrustedSigner
from modeldeploy.params import signing

RELEASE_EMAIL = "release@example.com"
INTERN_EMAIL = "intern@example.com"


@dataclass(frozen=True)
class SigningPki:
    """The certificates and keys of the tree above, as PEM files."""

    root: pki.KeyPair
    intermediate: pki.KeyPair
    release: pki.KeyPair
    intern: pki.KeyPair
    server: pki.KeyPair
    rogue: pki.KeyPair
    impostor: pki.KeyPair


def create_signing_pki(directory: Path) -> SigningPki:
    """Make every certificate of the tree in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    root = pki.create_ca(directory, "modeldeploy-test-root", stem="root")
    intermediate = pki.create_intermediate_ca(root, directory, "modeldeploy-test-intermediate")
    rogue = pki.create_ca(directory, "rogue-root", stem="rogue")
    server = pki.create_server_cert(root, pki.KeyPair(directory / "server.crt", directory / "server.key"),
                                    "server", ["127.0.0.1"])
    (directory / "impostor").mkdir()
    return SigningPki(
        root=root,
        intermediate=intermediate,
        release=pki.create_signing_cert(intermediate, directory, "release", RELEASE_EMAIL),
        intern=pki.create_signing_cert(root, directory, "intern", INTERN_EMAIL),
        server=server,
        rogue=rogue,
        impostor=pki.create_signing_cert(rogue, directory / "impostor", "release", RELEASE_EMAIL),
    )


def sign_with(model: Path, leaf: pki.KeyPair, *chain: pki.KeyPair) -> Path:
    """Sign `model` with the certificate method: `leaf`'s key and certificate, `chain` in the bundle."""
    return signing.sign(model, leaf.key, signing_certificate=leaf.cert, certificate_chain=[c.cert for c in chain])


def key_signer(name: str, keys: Keys) -> TrustedSigner:
    """A trusted signer holding the public key of `keys`."""
    return TrustedSigner(name=name, public_key_pem=keys.public.read_text())


def roots_signer(name: str, *roots: pki.KeyPair, subjects: tuple[str, ...] = (),
                 sans: tuple[str, ...] = ()) -> TrustedSigner:
    """A trusted certificate signer: the certificates of `roots`, within `subjects` and `sans`."""
    pem = "".join(root.cert.read_text() for root in roots)
    return TrustedSigner(name=name, certificate=TrustedCertificate(roots_pem=pem, subjects=subjects, sans=sans))


def bundle(**policies: tuple[TrustedSigner, ...]) -> TrustBundle:
    """A trust bundle: policy name -> its signers (a signature must satisfy every policy)."""
    return TrustBundle(policies=tuple(PolicyTrust(policy=name, signers=signers) for name, signers in policies.items()))


def write_trust(path: Path, trust: TrustBundle) -> Path:
    """`trust` as the trust.json the operator renders."""
    path.write_text(trust.document())
    return path
