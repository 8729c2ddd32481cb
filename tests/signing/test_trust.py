"""Trust policies: rotated keys, certificate roots with subject and SAN constraints, AND over
policies, and refusals that name who signed and whom the policy trusts."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devcluster.iris import Keys
from modeldeploy.contract.reasons import TRUST_INVALID, UNTRUSTED_SIGNER
from modeldeploy.contract.trust import TrustedSigner
from modeldeploy.params import signing
from modeldeploy.params.errors import VerificationError
from modeldeploy.params.trust import Trust

from .helpers import assert_refused, cli, fetch_with, flip_byte, upstream
from .pki import INTERN_EMAIL, RELEASE_EMAIL, SigningPki, bundle, key_signer, roots_signer, sign_with, write_trust

GUARDRAILS = {"policies": [{"name": "no-negative", "when": "prediction < 0", "action": "reject"},
                           {"name": "cap", "action": "clamp", "max": 2}]}


def refusal(model: Path, trust: Trust) -> VerificationError:
    with pytest.raises(VerificationError) as caught:
        signing.verify(model, trust)
    return caught.value


def signature_of(model: Path) -> bytes:
    return (model / signing.SIGNATURE).read_bytes()


# --- keys ---------------------------------------------------------------------------------------


def test_fingerprint_is_sha256sum_of_the_public_pem_and_the_bundles_key_hint(model: Path, keys: Keys) -> None:
    hint = json.loads(signature_of(model))["verificationMaterial"]["publicKey"]["hint"]
    assert keys.fingerprint == f"sha256:{hashlib.sha256(keys.public.read_bytes()).hexdigest()}" == f"sha256:{hint}"


def test_two_trusted_keys_both_verify_so_keys_can_rotate(model: Path, keys: Keys, other_keys: Keys) -> None:
    trust = Trust.from_bundle(bundle(prod=(key_signer("release-2025", keys), key_signer("release-2026", other_keys))))
    verified = signing.verify(model, trust)
    assert (verified.signer, verified.issuer) == (keys.fingerprint, None)
    assert verified.trusted_by == "ModelTrustPolicy/prod signer release-2025"
    assert verified.hash_algorithm == "sha256"
    signing.sign(model, other_keys.private)
    assert signing.verify(model, trust).trusted_by == "ModelTrustPolicy/prod signer release-2026"


def test_an_untrusted_key_is_refused_naming_the_key_and_whom_the_policy_trusts(
    model: Path, keys: Keys, other_keys: Keys
) -> None:
    err = refusal(model, Trust.from_bundle(bundle(prod=(key_signer("release-2026", other_keys),))))
    assert err.reason == UNTRUSTED_SIGNER
    assert str(err) == (f"UntrustedSigner: the signature was made by key {keys.fingerprint}, which ModelTrustPolicy "
                        f"prod does not trust (trusted: release-2026 {other_keys.fingerprint})")


def test_the_spec_key_keeps_its_key_mismatch_and_trusted_by(model: Path, keys: Keys, other_keys: Keys) -> None:
    assert signing.verify(model, Trust.from_public_key(keys.public)).trusted_by == "spec.parameters.publicKey"
    assert refusal(model, Trust.from_public_key(other_keys.public)).reason == "KeyMismatch"


def test_every_policy_must_trust_the_signer(model: Path, keys: Keys, other_keys: Keys) -> None:
    both = Trust.from_bundle(bundle(prod=(key_signer("release", keys),), audit=(key_signer("audited", keys),)))
    assert signing.verify(model, both).trusted_by == (
        "ModelTrustPolicy/prod signer release, ModelTrustPolicy/audit signer audited"
    )
    one = Trust.from_bundle(bundle(prod=(key_signer("release", keys),), audit=(key_signer("audited", other_keys),)))
    err = refusal(model, one)
    assert err.reason == UNTRUSTED_SIGNER and "ModelTrustPolicy audit does not trust" in str(err)


def test_a_key_signature_is_refused_by_a_policy_of_certificates_only(
    model: Path, keys: Keys, certs: SigningPki
) -> None:
    err = refusal(model, Trust.from_bundle(bundle(prod=(roots_signer("release-pki", certs.root),))))
    assert err.reason == UNTRUSTED_SIGNER
    assert f"made by key {keys.fingerprint}, but ModelTrustPolicy prod trusts only certificate signers" in str(err)


# --- certificates -------------------------------------------------------------------------------


def test_certificate_through_an_intermediate_verifies_against_the_root(
    model: Path, certs: SigningPki, keys: Keys
) -> None:
    sign_with(model, certs.release, certs.intermediate)
    trust = Trust.from_bundle(bundle(prod=(key_signer("old-key", keys), roots_signer("release-pki", certs.root))))
    verified = signing.verify(model, trust)
    assert (verified.signer, verified.issuer) == ("CN=release", "CN=modeldeploy-test-intermediate")
    assert verified.trusted_by == "ModelTrustPolicy/prod signer release-pki"
    leaf_key = x509.load_pem_x509_certificate(certs.release.cert.read_bytes()).public_key()
    assert verified.key_fingerprint == signing.fingerprint(leaf_key)  # type: ignore[arg-type]


def test_certificate_from_an_untrusted_root_is_refused(model: Path, certs: SigningPki) -> None:
    sign_with(model, certs.impostor, certs.rogue)
    err = refusal(model, Trust.from_bundle(bundle(prod=(roots_signer("release-pki", certs.root),))))
    assert err.reason == UNTRUSTED_SIGNER
    assert str(err).startswith("UntrustedSigner: the signature was made with certificate CN=release (issuer "
                               "CN=rogue-root), which ModelTrustPolicy prod does not trust: it does not chain to "
                               "the roots of release-pki (CN=modeldeploy-test-root: ")


def test_subject_constraint_admits_only_the_named_subjects(model: Path, certs: SigningPki) -> None:
    trust = Trust.from_bundle(bundle(prod=(roots_signer("release-pki", certs.root, subjects=("CN=release",)),)))
    sign_with(model, certs.release, certs.intermediate)
    assert signing.verify(model, trust).signer == "CN=release"
    sign_with(model, certs.intern, certs.root)
    err = refusal(model, trust)
    assert err.reason == UNTRUSTED_SIGNER
    assert "its subject CN=intern is not one of release-pki's (CN=release)" in str(err)


def test_san_constraint_admits_only_the_named_identities(model: Path, certs: SigningPki) -> None:
    trust = Trust.from_bundle(bundle(prod=(roots_signer("release-pki", certs.root, sans=(RELEASE_EMAIL,)),)))
    sign_with(model, certs.release, certs.intermediate)
    assert signing.verify(model, trust).trusted_by == "ModelTrustPolicy/prod signer release-pki"
    sign_with(model, certs.intern, certs.root)
    err = refusal(model, trust)
    assert err.reason == UNTRUSTED_SIGNER
    assert f"none of its names ({INTERN_EMAIL}) is one of release-pki's ({RELEASE_EMAIL})" in str(err)


def test_each_certificate_signer_says_why_it_refused(model: Path, certs: SigningPki) -> None:
    trust = Trust.from_bundle(bundle(prod=(roots_signer("rogue-pki", certs.rogue),
                                           roots_signer("release-pki", certs.root, subjects=("CN=release",)))))
    sign_with(model, certs.intern, certs.root)
    message = str(refusal(model, trust))
    assert "it does not chain to the roots of rogue-pki" in message and "is not one of release-pki's" in message


def test_certificate_policy_and_key_policy_must_both_hold(model: Path, certs: SigningPki, keys: Keys) -> None:
    sign_with(model, certs.release, certs.intermediate)
    trust = Trust.from_bundle(bundle(prod=(roots_signer("release-pki", certs.root),),
                                     team=(key_signer("team-key", keys),)))
    err = refusal(model, trust)
    assert err.reason == UNTRUSTED_SIGNER
    assert f"ModelTrustPolicy team trusts only keys (team-key {keys.fingerprint})" in str(err)


def test_a_leaf_without_signing_usage_is_refused(model: Path, certs: SigningPki) -> None:
    sign_with(model, certs.server, certs.root)
    err = refusal(model, Trust.from_bundle(bundle(prod=(roots_signer("release-pki", certs.root),))))
    assert err.reason == UNTRUSTED_SIGNER
    assert "CN=server (issuer CN=modeldeploy-test-root) may not sign: it has neither KeyUsage" in str(err)


def test_a_certificate_signature_altered_after_signing_is_invalid(model: Path, certs: SigningPki) -> None:
    sign_with(model, certs.release, certs.intermediate)
    document = json.loads(signature_of(model))
    signature = document["dsseEnvelope"]["signatures"][0]
    signature["sig"] = ("A" if signature["sig"][0] != "A" else "B") + signature["sig"][1:]
    (model / signing.SIGNATURE).write_text(json.dumps(document))
    err = refusal(model, Trust.from_bundle(bundle(prod=(roots_signer("release-pki", certs.root),))))
    assert err.reason == "SignatureInvalid" and "chains to release-pki" in str(err)


# --- admission: the bundle alone ----------------------------------------------------------------


def test_verify_signature_checks_the_bundle_without_any_file(model: Path, certs: SigningPki) -> None:
    sign_with(model, certs.release, certs.intermediate)
    data = signature_of(model)
    shutil.rmtree(model)
    verified = signing.verify_signature(data, Trust.from_bundle(bundle(prod=(roots_signer("pki", certs.root),))))
    assert verified.signer == "CN=release" and sorted(verified.files) == ["model.joblib", "model.yaml"]
    with pytest.raises(VerificationError) as caught:
        signing.verify_signature(data, Trust.from_bundle(bundle(prod=(roots_signer("rogue", certs.rogue),))))
    assert caught.value.reason == UNTRUSTED_SIGNER


# --- trust.json ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{not json", "Invalid JSON"),
        ('{"policies": []}', "policies"),
        ('{"policies": [{"policy": "prod", "signers": [{"name": "k", "publicKeyPem": "garbage"}]}]}',
         "signer k of prod is not a PEM public key"),
        ('{"policies": [{"policy": "prod", "signers": [{"name": "c", "certificate": {"rootsPem": "garbage"}}]}]}',
         "signer c of prod: the roots are not PEM certificates"),
        ('{"policies": [{"policy": "prod", "signers": [{"name": "both"}]}]}', "exactly one of"),
    ],
    ids=["not-json", "no-policies", "bad-key-pem", "bad-roots-pem", "signer-of-no-kind"],
)
def test_a_malformed_trust_file_is_trust_invalid(model: Path, tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "trust.json"
    path.write_text(content)
    with pytest.raises(VerificationError) as caught:
        Trust.load(path)
    assert caught.value.reason == TRUST_INVALID and says in str(caught.value)
    result = cli("verify", model, "--trust", path)
    assert result.exit_code == 1 and result.stderr.count("\n") == 1 and TRUST_INVALID in result.stderr


def test_a_trust_key_that_is_not_ec_is_trust_invalid(other_keys: Keys, tmp_path: Path, certs: SigningPki) -> None:
    signer = TrustedSigner(name="cert-as-key", public_key_pem=certs.root.cert.read_text())
    with pytest.raises(VerificationError) as caught:
        Trust.from_bundle(bundle(prod=(signer,)))
    assert caught.value.reason == TRUST_INVALID and "cert-as-key" in str(caught.value)


def test_a_missing_trust_file_is_trust_invalid(tmp_path: Path) -> None:
    with pytest.raises(VerificationError) as caught:
        Trust.load(tmp_path / "absent.json")
    assert caught.value.reason == TRUST_INVALID and "absent.json" in str(caught.value)


# --- command line -------------------------------------------------------------------------------


def test_cli_verify_with_trust_and_with_certificate_chain(
    model: Path, certs: SigningPki, keys: Keys, tmp_path: Path
) -> None:
    sign_with(model, certs.release, certs.intermediate)
    trust = write_trust(tmp_path / "trust.json", bundle(prod=(roots_signer("release-pki", certs.root),)))
    ok = cli("verify", model, "--trust", trust)
    assert ok.exit_code == 0 and "signed by CN=release (ModelTrustPolicy/prod signer release-pki" in ok.stdout
    roots = cli("verify", model, "--certificate-chain", certs.root.cert, "--subject", "CN=release",
                "--san", RELEASE_EMAIL)
    assert roots.exit_code == 0 and "--certificate-chain root.crt" in roots.stdout
    wrong = cli("verify", model, "--certificate-chain", certs.root.cert, "--subject", "CN=intern")
    assert wrong.exit_code == 1 and "UntrustedSigner" in wrong.stderr and "is not one of root.crt's" in wrong.stderr
    both = cli("verify", model, "--certificate-chain", certs.root.cert, "--public-key", keys.public)
    assert both.exit_code == 2 and "exactly one of --public-key, --trust or --certificate-chain" in both.stderr
    stray = cli("verify", model, "--public-key", keys.public, "--subject", "CN=release")
    assert stray.exit_code == 2 and "--subject and --san constrain --certificate-chain" in stray.stderr


@pytest.mark.parametrize(("algorithm", "shard_size", "reported"),
                         [("blake3", None, "blake3"), ("blake2", None, "blake2"), ("sha256", 1000, "sha256 shards")])
def test_sign_hash_choices_verify_and_are_reported(
    model: Path, keys: Keys, algorithm: str, shard_size: int | None, reported: str
) -> None:
    args = ["--shard-size", str(shard_size)] if shard_size else []
    assert cli("sign", model, "--private-key", keys.private, "--hash", algorithm, *args).exit_code == 0
    assert signing.verify(model, keys.public).hash_algorithm == reported
    flip_byte(model / "model.joblib")
    assert refusal(model, Trust.from_public_key(keys.public)).files == ["model.joblib"]


def test_sharded_blake3_is_refused_with_a_reason(model: Path, keys: Keys) -> None:
    result = cli("sign", model, "--private-key", keys.private, "--hash", "blake3", "--shard-size", "1000")
    assert result.exit_code == 1 and "model_signing has no sharded blake3" in result.stderr


def test_cli_sign_with_a_certificate_that_is_not_the_keys(model: Path, certs: SigningPki) -> None:
    result = cli("sign", model, "--private-key", certs.intern.key, "--signing-certificate", certs.release.cert,
                 "--certificate-chain", certs.intermediate.cert)
    assert result.exit_code == 1 and "PrivateKeyInvalid" in result.stderr


def test_cli_sign_with_a_certificate_needs_its_chain(model: Path, certs: SigningPki) -> None:
    result = cli("sign", model, "--private-key", certs.intern.key, "--signing-certificate", certs.intern.cert)
    assert result.exit_code == 1 and "needs a certificate chain" in result.stderr
    assert not (model / "model.sig").read_bytes().count(b"x509CertificateChain")  # the key signature stays


# --- fetch --------------------------------------------------------------------------------------


def test_fetch_with_trust_records_who_signed_and_the_signed_policies(
    model: Path, dest: Path, certs: SigningPki, tmp_path: Path
) -> None:
    (model / "policies.yaml").write_text(yaml.safe_dump(GUARDRAILS))
    sign_with(model, certs.release, certs.intermediate)
    trust = write_trust(tmp_path / "trust.json", bundle(prod=(roots_signer("release-pki", certs.root),)))
    result, record = fetch_with(model, dest, "--trust", trust)
    assert result.exit_code == 0, record
    assert (record["signer"], record["issuer"]) == ("CN=release", "CN=modeldeploy-test-intermediate")
    assert (record["trustedBy"], record["hashAlgorithm"]) == ("ModelTrustPolicy/prod signer release-pki", "sha256")
    assert record["signedPolicies"] == ["no-negative", "cap"]
    assert (dest / "policies.yaml").is_file()


def test_fetch_refuses_a_malformed_signed_policies_file_and_installs_nothing(
    model: Path, dest: Path, keys: Keys, tmp_path: Path
) -> None:
    (model / "policies.yaml").write_text("policies:\n  - name: x\n    action: explode\n")
    signing.sign(model, keys.private)
    trust = write_trust(tmp_path / "trust.json", bundle(prod=(key_signer("release", keys),)))
    result, record = fetch_with(model, dest, "--trust", trust)
    assert_refused(result, record, dest, "SignedPoliciesInvalid")
    assert "policies.yaml" in record["message"]


def test_fetch_refuses_an_untrusted_certificate_and_installs_nothing(
    model: Path, dest: Path, certs: SigningPki, tmp_path: Path
) -> None:
    sign_with(model, certs.impostor, certs.rogue)
    trust = write_trust(tmp_path / "trust.json", bundle(prod=(roots_signer("release-pki", certs.root),)))
    result, record = fetch_with(model, dest, "--trust", trust)
    assert_refused(result, record, dest, UNTRUSTED_SIGNER)
    assert "CN=rogue-root" in record["message"]


def test_fetch_takes_exactly_one_of_public_key_or_trust(model: Path, dest: Path, keys: Keys, tmp_path: Path) -> None:
    trust = write_trust(tmp_path / "trust.json", bundle(prod=(key_signer("release", keys),)))
    both = cli("fetch", model, "--dest", dest, "--public-key", keys.public, "--trust", trust)
    neither = cli("fetch", model, "--dest", dest)
    assert both.exit_code == neither.exit_code == 2 and not dest.exists()


# --- interoperability with the upstream model_signing CLI and API -------------------------------


def test_upstream_certificate_signature_verifies_with_ours(model: Path, certs: SigningPki) -> None:
    done = upstream("sign", "certificate", model, "--signature", model / "model.sig", "--private_key",
                    certs.release.key, "--signing_certificate", certs.release.cert,
                    "--certificate_chain", certs.intermediate.cert)
    assert done.returncode == 0, done.stderr
    trust = Trust.from_bundle(bundle(prod=(roots_signer("release-pki", certs.root, sans=(RELEASE_EMAIL,)),)))
    assert signing.verify(model, trust).signer == "CN=release"
    flip_byte(model / "model.joblib")
    assert refusal(model, trust).files == ["model.joblib"]


def test_our_certificate_signature_verifies_with_upstream(model: Path, certs: SigningPki) -> None:
    sign_with(model, certs.release, certs.intermediate)
    verify = ("verify", "certificate", model, "--signature", model / "model.sig", "--certificate_chain")
    done = upstream(*verify, certs.root.cert)
    assert done.returncode == 0, done.stderr
    assert upstream(*verify, certs.rogue.cert).returncode != 0


def test_our_blake3_signature_verifies_with_upstreams_verifier(model: Path, keys: Keys) -> None:
    from model_signing import verifying

    assert cli("sign", model, "--private-key", keys.private, "--hash", "blake3").exit_code == 0
    verifier = verifying.Config().use_elliptic_key_verifier(public_key=keys.public)
    verifier.verify(model, model / "model.sig")  # no hashing config: upstream reads it from the signature
    flip_byte(model / "model.joblib")
    with pytest.raises(ValueError, match=r"model\.joblib"):
        verifier.verify(model, model / "model.sig")


def test_upstream_cli_verifies_only_sha256_so_it_refuses_any_blake3_signature(model: Path, keys: Keys) -> None:
    """model_signing 1.1.1's `verify key` always hashes with sha256 (it has no hash option): a blake3
    signature, ours or upstream's, cannot verify with it. When this fails, upstream has fixed that."""
    assert cli("sign", model, "--private-key", keys.private, "--hash", "blake3").exit_code == 0
    done = upstream("verify", "key", model, "--signature", model / "model.sig", "--public_key", keys.public)
    assert done.returncode == 1 and "algorithm='sha256'" in done.stderr


def test_upstream_api_blake3_signature_verifies_with_ours(model: Path, keys: Keys) -> None:
    from model_signing import hashing
    from model_signing import signing as upstream_signing

    hashing_config = hashing.Config().use_file_serialization(hashing_algorithm="blake3")
    config = upstream_signing.Config().use_elliptic_key_signer(private_key=keys.private)
    (model / "model.sig").unlink()  # the API hashes whatever is in the tree
    config.set_hashing_config(hashing_config).sign(model, model / "model.sig")
    verified = signing.verify(model, keys.public)
    assert (verified.hash_algorithm, verified.signer) == ("blake3", keys.fingerprint)


# --- hostile certificate bundles: a clear refusal, nothing installed ---------------------------


def _garbage_intermediate(chain: list[dict[str, str]], certs: SigningPki) -> None:
    chain[1]["rawBytes"] = base64.b64encode(b"not a certificate").decode()


def _huge_chain(chain: list[dict[str, str]], certs: SigningPki) -> None:
    chain.extend([chain[1]] * 40)


def _rsa_leaf(chain: list[dict[str, str]], certs: SigningPki) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "rsa")])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
                   .sign(key, hashes.SHA256()))
    chain[0]["rawBytes"] = base64.b64encode(certificate.public_bytes(serialization.Encoding.DER)).decode()


def _leaf_from_rogue(chain: list[dict[str, str]], certs: SigningPki) -> None:
    impostor = x509.load_pem_x509_certificate(certs.impostor.cert.read_bytes())
    chain[0]["rawBytes"] = base64.b64encode(impostor.public_bytes(serialization.Encoding.DER)).decode()


@pytest.mark.parametrize(
    ("edit", "reason", "says"),
    [
        (_garbage_intermediate, "SignatureMalformed", "certificate 1 of the chain is not a DER X.509 certificate"),
        (_huge_chain, "SignatureMalformed", "a chain of 42 certificates (at most 10)"),
        (_rsa_leaf, "UnsupportedSignature", "the signing certificate CN=rsa (issuer CN=rsa) is an RSA key"),
        (_leaf_from_rogue, UNTRUSTED_SIGNER, "does not chain to the roots of release-pki"),
    ],
    ids=["garbage-intermediate", "huge-chain", "rsa-leaf", "leaf-swapped-for-an-untrusted-one"],
)
def test_hostile_certificate_chains_are_refused_and_nothing_is_installed(
    model: Path, dest: Path, certs: SigningPki, tmp_path: Path,
    edit: Callable[[list[dict[str, str]], SigningPki], None], reason: str, says: str,
) -> None:
    sign_with(model, certs.release, certs.intermediate)
    document = json.loads(signature_of(model))
    edit(document["verificationMaterial"]["x509CertificateChain"]["certificates"], certs)
    (model / signing.SIGNATURE).write_text(json.dumps(document))
    trust = write_trust(tmp_path / "trust.json", bundle(prod=(roots_signer("release-pki", certs.root),)))
    err = refusal(model, Trust.load(trust))
    assert err.reason == reason and says in str(err), str(err)
    result, record = fetch_with(model, dest, "--trust", trust)
    assert_refused(result, record, dest, reason)
