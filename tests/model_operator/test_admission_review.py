"""The admission decision (`admission.review`) over real signatures: refuse, warn, pin, re-pin.

The signatures are real OpenSSF Model Signing bundles made here; only their transport is
replaced by a function returning bytes (the webhook's real fetch from MinIO is in tests/e2e).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from devcluster import pki
from devcluster.iris import Keys, write_keys
from model_operator.admission import Evidence, review, signature_uris
from model_operator.trust import ResolvedPolicy, decide, parse_policy, resolve_policy
from modeldeploy.contract.reasons import (
    DIGEST_MISMATCH,
    KEY_MISMATCH,
    NO_TRUSTED_SIGNER,
    SIGNATURE_VALID,
    SOURCE_NOT_FOUND,
    UNTRUSTED_SIGNER,
)
from modeldeploy.contract.spec import ModelDeploymentSpec, Parameters, parse_spec
from modeldeploy.contract.trust import MaterialRef
from modeldeploy.params import signing
from modeldeploy.params.errors import TransportError

NOW = "2026-12-02T00:00:00Z"
SOURCE = "s3://models/iris.tar.gz"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("admission")


def _tree(work: Path, name: str, content: str = "weights") -> Path:
    tree = work / name
    tree.mkdir(exist_ok=True)
    (tree / "model.bin").write_text(content)
    return tree


@pytest.fixture(scope="module")
def keys(work: Path) -> dict[str, Keys]:
    return {name: write_keys(work / name) for name in ("current", "following", "stranger")}


@pytest.fixture(scope="module")
def pkis(work: Path) -> dict[str, Any]:
    ca = pki.create_ca(work, "models-ca")
    return {"ca": ca, "release": pki.create_signing_cert(ca, work, "release", "release@example.com"),
            "intern": pki.create_signing_cert(ca, work, "intern")}


def _signature(work: Path, keys: Keys | None = None, certificate: pki.KeyPair | None = None,
               content: str = "weights") -> bytes:
    name = keys.public.parent.name if keys else certificate.cert.stem if certificate else "x"
    tree = _tree(work, f"tree-{name}-{content}", content)
    if certificate is not None:
        path = signing.sign(tree, certificate.key, signing_certificate=certificate.cert,
                            certificate_chain=[certificate.cert.parent / "ca.crt"])
    else:
        assert keys is not None
        path = signing.sign(tree, keys.private)
    return path.read_bytes()


def policy(name: str, keys: dict[str, Keys], pkis: dict[str, Any], mode: str = "enforce") -> ResolvedPolicy:
    spec = parse_policy(name, {"mode": mode, "signers": [
        {"name": "current", "publicKey": {"secretName": "k", "key": "current"}},
        {"name": "following", "publicKey": {"secretName": "k", "key": "following"}},
        {"name": "pki", "certificate": {"roots": {"secretName": "k", "key": "ca"}, "subjects": ["CN=release"]}},
    ]})
    material = {"current": keys["current"].public.read_text(), "following": keys["following"].public.read_text(),
                "ca": pkis["ca"].cert.read_text()}

    def read(ref: MaterialRef) -> str | None:
        return material.get(ref.key)

    return resolve_policy(name, spec, read)


def md(**parameters: Any) -> ModelDeploymentSpec:
    return parse_spec({"model": {"name": "iris", "version": "1"}, "parameters": {"source": SOURCE, **parameters}})


def serves(data: bytes) -> Callable[[Parameters], tuple[str, bytes]]:
    return lambda parameters: (signature_uris(parameters)[0], data)


def unreachable(parameters: Parameters) -> tuple[str, bytes]:
    raise TransportError(SOURCE_NOT_FOUND, "minio.example: connection refused")


def never(parameters: Parameters) -> tuple[str, bytes]:
    raise AssertionError("the signature was fetched although the parameters did not change")


def test_signed_by_a_trusted_key_is_admitted_and_pinned(work: Path, keys: dict[str, Keys], pkis: dict[str, Any]) -> None:
    data = _signature(work, keys["current"])
    spec = md()
    result = review(spec, None, None, decide(spec, [policy("prod", keys, pkis)]), lambda: None, serves(data), NOW)
    assert result.refusal is None and result.warnings == [] and result.reason == SIGNATURE_VALID
    digest = signing.verify_signature(data, signing.trust_of(keys["current"].public)).manifest_digest
    assert result.pin == digest.removeprefix("sha256:")
    assert result.evidence == Evidence(f"{SOURCE}.sig", keys["current"].fingerprint, "ModelTrustPolicy/prod signer current",
                                       digest, NOW, pinned=True)


def test_rotation_both_trusted_keys_are_admitted(work: Path, keys: dict[str, Keys], pkis: dict[str, Any]) -> None:
    spec = md()
    decision = decide(spec, [policy("prod", keys, pkis)])
    for name in ("current", "following"):
        result = review(spec, None, None, decision, lambda: None, serves(_signature(work, keys[name])), NOW)
        assert result.refusal is None and result.evidence is not None
        assert result.evidence.trusted_by == f"ModelTrustPolicy/prod signer {name}"


def test_an_untrusted_key_is_refused_naming_the_key_and_the_policy(
    work: Path, keys: dict[str, Keys], pkis: dict[str, Any],
) -> None:
    spec = md()
    result = review(spec, None, None, decide(spec, [policy("prod", keys, pkis)]), lambda: None,
                    serves(_signature(work, keys["stranger"])), NOW)
    assert result.refusal is not None and result.reason == UNTRUSTED_SIGNER
    assert f"made by key {keys['stranger'].fingerprint}, which ModelTrustPolicy prod does not trust" in result.refusal
    assert keys["current"].fingerprint in result.refusal  # the trusted keys are listed


def test_certificates_must_chain_to_the_roots_and_match_the_subject(
    work: Path, keys: dict[str, Keys], pkis: dict[str, Any],
) -> None:
    spec = md()
    decision = decide(spec, [policy("prod", keys, pkis)])
    admitted = review(spec, None, None, decision, lambda: None, serves(_signature(work, certificate=pkis["release"])),
                      NOW)
    assert admitted.refusal is None and admitted.evidence is not None
    assert (admitted.evidence.signer, admitted.evidence.issuer) == ("CN=release", "CN=models-ca")
    refused = review(spec, None, None, decision, lambda: None, serves(_signature(work, certificate=pkis["intern"])), NOW)
    assert refused.refusal is not None and "its subject CN=intern is not one of pki's subjects (CN=release)" in (
        refused.refusal)


def test_an_unreachable_source_is_refused_when_enforced_and_a_warning_otherwise(
    keys: dict[str, Keys], pkis: dict[str, Any],
) -> None:
    spec = md()
    enforced = review(spec, None, None, decide(spec, [policy("prod", keys, pkis)]), lambda: None, unreachable, NOW)
    assert enforced.refusal is not None and "(ModelTrustPolicy prod enforces)" in enforced.refusal
    assert enforced.reason == SOURCE_NOT_FOUND
    own_key = md(publicKey={"secretName": "iris-key"})
    pem = keys["stranger"].public.read_text()
    warned = review(own_key, None, None, decide(own_key, []), lambda: pem, unreachable, NOW)
    assert warned.refusal is None and "the pods will verify it" in warned.warnings[0]


def test_nothing_is_fetched_while_the_spec_key_secret_is_not_there() -> None:
    def fetch(parameters: Any) -> tuple[str, bytes]:
        raise AssertionError("no trust to verify with: the signature must not be fetched")

    own_key = md(publicKey={"secretName": "iris-key"})
    warned = review(own_key, None, None, decide(own_key, []), lambda: None, fetch, NOW)
    assert warned.refusal is None and "Secret iris-key with the public key is not there yet" in warned.warnings[0]


def test_warn_mode_admits_what_it_would_refuse_with_a_warning(
    work: Path, keys: dict[str, Keys], pkis: dict[str, Any],
) -> None:
    stranger = _signature(work, keys["stranger"])
    spec = md()
    deciding = review(spec, None, None, decide(spec, [policy("audit", keys, pkis, "warn")]), lambda: None,
                      serves(stranger), NOW)
    assert deciding.refusal is None and "warn mode: admitted" in deciding.warnings[0]
    own_key = md(publicKey={"secretName": "iris-key"})
    pem = keys["stranger"].public.read_text()
    alongside = review(own_key, None, None, decide(own_key, [policy("audit", keys, pkis, "warn")]), lambda: pem,
                       serves(stranger), NOW)
    assert alongside.refusal is None and alongside.pin is not None
    assert "ModelTrustPolicy audit (warn) would refuse this" in alongside.warnings[0]


def test_a_spec_key_that_did_not_sign_is_refused(work: Path, keys: dict[str, Keys]) -> None:
    spec = md(publicKey={"secretName": "iris-key"})
    result = review(spec, None, None, decide(spec, []), lambda: keys["current"].public.read_text(),
                    serves(_signature(work, keys["stranger"])), NOW)
    assert result.refusal is not None and f"made by key {keys['stranger'].fingerprint}, not by the trusted key" in (
        result.refusal)
    assert result.reason == KEY_MISMATCH


def test_a_users_pin_that_is_not_the_signed_digest_is_refused(
    work: Path, keys: dict[str, Keys], pkis: dict[str, Any],
) -> None:
    spec = md(sha256="0" * 64)
    result = review(spec, None, None, decide(spec, [policy("prod", keys, pkis)]), lambda: None,
                    serves(_signature(work, keys["current"])), NOW)
    assert result.refusal is not None and "spec.parameters.sha256 pins 000" in result.refusal
    assert result.reason == DIGEST_MISMATCH


def test_updates_verify_only_when_the_parameters_change_and_re_pin_our_own_pin(
    work: Path, keys: dict[str, Keys], pkis: dict[str, Any],
) -> None:
    first = _signature(work, keys["current"])
    spec = md()
    decision = decide(spec, [policy("prod", keys, pkis)])
    created = review(spec, None, None, decision, lambda: None, serves(first), NOW)
    assert created.pin is not None and created.evidence is not None
    pinned = md(sha256=created.pin)
    scaled = review(pinned, pinned, created.evidence, decision, lambda: None, never, NOW)
    assert scaled.refusal is None and scaled.pin is None and scaled.reason is None  # nothing checked
    moved = md(sha256=created.pin, source="s3://models/iris-2.tar.gz")
    second = _signature(work, keys["current"], content="new weights")
    updated = review(moved, pinned, created.evidence, decision, lambda: None, serves(second), NOW)
    assert updated.refusal is None and updated.pin is not None and updated.pin != created.pin


def test_no_signer_at_all_is_refused() -> None:
    spec = md()
    result = review(spec, None, None, decide(spec, []), lambda: None, never, NOW)
    assert result.refusal is not None and "no signer to verify with" in result.refusal
    assert result.reason == NO_TRUSTED_SIGNER


def test_the_evidence_annotation_is_camel_case_json_and_reads_back() -> None:
    evidence = Evidence("s3://m/a.sig", "CN=release", "ModelTrustPolicy/prod signer pki", "sha256:" + "a" * 64, NOW,
                        pinned=True, issuer="CN=ca")
    annotation = evidence.annotation()
    assert '"manifestDigest":"sha256:' in annotation and '"trustedBy":' in annotation
    assert Evidence.parse({"modeldeploy.io/admission": annotation}) == evidence
    assert Evidence.parse({"modeldeploy.io/admission": "not json"}) is None
    assert Evidence.parse({"modeldeploy.io/admission": "[1]"}) is None
    assert Evidence.parse(None) is None
