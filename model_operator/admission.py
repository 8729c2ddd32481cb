"""Admission of a ModelDeployment: verify its signature at `kubectl apply`, pin the digest, refuse what fails later.

`review()` decides one create or update from already-gathered facts (the parsed spec, the
trust decision of `model_operator.trust`, the signature fetcher) and returns a `Review`: a
refusal a user can act on, warnings, and the digest to pin. The kopf handlers in
`model_operator.webhooks` gather the facts and turn a `Review` into the admission response.

Only the signature is fetched (at most `MAX_SIGNATURE_BYTES`, within `SIGNATURE_DEADLINE`),
from `spec.parameters.signature`, else `SOURCE.sig`, else `SOURCE/model.sig`. An update that
leaves `spec.parameters` alone is not re-verified, so scaling or editing policies never
waits on the bucket.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic.alias_generators import to_camel, to_snake

from model_operator.trust import TrustDecision
from modeldeploy.contract.api import GROUP
from modeldeploy.contract.reasons import DIGEST_MISMATCH, SIGNATURE_MISSING, SIGNATURE_VALID, SOURCE_NOT_FOUND
from modeldeploy.contract.spec import ModelDeploymentSpec, Parameters
from modeldeploy.contract.trust import SPEC_KEY_POLICY, PolicyTrust, TrustBundle, TrustedSigner
from modeldeploy.params import signing, sources
from modeldeploy.params.errors import ParametersError, TransportError, VerificationError
from modeldeploy.params.trust import Trust

ADMISSION_ANNOTATION = f"{GROUP}/admission"
MAX_SIGNATURE_BYTES = 1 << 20
SIGNATURE_DEADLINE = 5.0


@dataclass(frozen=True)
class Evidence:
    """What admission verified, kept in the ModelDeployment's `modeldeploy.io/admission` annotation."""

    signature: str  # the URI it was read from (credentials redacted)
    signer: str
    trusted_by: str
    manifest_digest: str
    admitted_at: str
    pinned: bool  # spec.parameters.sha256 was set by admission, not by the user
    issuer: str | None = None

    def annotation(self) -> str:
        """The annotation's value: JSON with camelCase keys, as the rest of the object."""
        return json.dumps({to_camel(key): value for key, value in asdict(self).items()}, sort_keys=True,
                          separators=(",", ":"))

    @classmethod
    def parse(cls, annotations: dict[str, str] | None) -> Evidence | None:
        """The evidence in a ModelDeployment's annotations, or None (absent or not ours)."""
        try:
            stored = json.loads((annotations or {})[ADMISSION_ANNOTATION])
            return cls(**{to_snake(key): value for key, value in stored.items()})
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


@dataclass
class Review:
    """The outcome of one admission review."""

    refusal: str | None = None
    warnings: list[str] = field(default_factory=list)
    pin: str | None = None  # hex digest to write into spec.parameters.sha256
    evidence: Evidence | None = None
    reason: str | None = None  # the signature check's reason code (SignatureValid); None: nothing was checked


FetchSignature = Callable[[Parameters], tuple[str, bytes]]
ReadSpecKey = Callable[[], str | None]  # PEM of spec.parameters.publicKey, None when its Secret/key is missing


def signature_uris(parameters: Parameters) -> list[str]:
    """Where admission looks for the signature, in order."""
    if parameters.signature:
        return [parameters.signature]
    source = parameters.source.rstrip("/")
    return [f"{source}.sig", f"{source}/{signing.SIGNATURE}"]


def fetch_signature(parameters: Parameters, environ: dict[str, str] | None) -> tuple[str, bytes]:
    """The signature's bytes and where they came from (bounded in size and time).

    Raises:
        TransportError: the source cannot be reached from the operator (file:// included).
        VerificationError: `SignatureMissing` when no candidate exists, `TooLarge` over the bound.
    """
    uris = signature_uris(parameters)
    if any(sources.scheme_of(uri) == "file" for uri in uris):
        raise TransportError(
            SOURCE_NOT_FOUND, "file:// sources are read on the node, so admission cannot check their signature"
        )
    settings = sources.Settings(max_bytes=MAX_SIGNATURE_BYTES, timeout=SIGNATURE_DEADLINE,
                                deadline=SIGNATURE_DEADLINE, retries=0, environ=environ or {})
    budget = sources.Budget(MAX_SIGNATURE_BYTES, deadline=sources.deadline_after(SIGNATURE_DEADLINE))
    with tempfile.TemporaryDirectory(prefix="modeldeploy-admission-") as work:
        for index, uri in enumerate(uris):
            try:
                path = sources.download_file(uri, Path(work, f"{index}.sig"), budget, settings)
            except TransportError as err:
                if err.reason == SOURCE_NOT_FOUND:
                    continue
                raise
            return sources.redact(uri), path.read_bytes()
    shown = " or ".join(sources.redact(uri) for uri in uris)
    raise VerificationError(
        SIGNATURE_MISSING,
        f"no signature at {shown}; publish it beside the source (SOURCE.sig) or set spec.parameters.signature "
        "(a signature inside an archive cannot be checked at admission)",
    )


def parameters_changed(new: ModelDeploymentSpec, old: ModelDeploymentSpec | None, evidence: Evidence | None) -> bool:
    """Whether an update touches what was verified (a pin admission wrote itself does not count)."""
    if old is None:
        return True
    ours = {"sha256"} if evidence is not None and evidence.pinned else set()
    return new.parameters.model_dump(exclude=ours) != old.parameters.model_dump(exclude=ours) or (
        new.parameters.sha256 != old.parameters.sha256 and new.parameters.sha256 is not None
    )


def _spec_key_trust(spec: ModelDeploymentSpec, read_spec_key: ReadSpecKey) -> Trust | None:
    key = spec.parameters.public_key
    if key is None:
        return None
    pem = read_spec_key()
    if pem is None:
        return None
    signer = TrustedSigner(name=f"Secret/{key.secret_name} key {key.key}", public_key_pem=pem)
    return Trust.from_bundle(TrustBundle(policies=(PolicyTrust(policy=SPEC_KEY_POLICY, signers=(signer,)),)))


def _refuse(result: Review, decision: TrustDecision, message: str) -> Review:
    """Refuse, unless only warn-mode policies decide: then admit with the message as a warning."""
    if decision.enforced or decision.bundle is None:
        result.refusal = message
    else:
        result.warnings.append(f"{message} (warn mode: admitted; the pods will refuse it)")
    return result


def review(
    spec: ModelDeploymentSpec,
    old: ModelDeploymentSpec | None,
    old_evidence: Evidence | None,
    decision: TrustDecision,
    read_spec_key: ReadSpecKey,
    fetch: FetchSignature,
    now: str,
) -> Review:
    """Decide one create/update of a ModelDeployment (see the module docstring).

    Refused: no signer at all; an enforcing policy that cannot be read; a signature that is
    missing, malformed or made by nobody the deciding trust names; a user's pin that is not
    the signed digest; and (enforcing) a source the operator cannot reach. Warned: the same
    where only warn-mode policies or the spec's own key decide an unreachable source, and
    warn-mode policies that would refuse.
    """
    result = Review(warnings=list(decision.ignored))
    if decision.problem is not None:
        result.refusal, result.reason = decision.problem, decision.reason
        return result
    if not parameters_changed(spec, old, old_evidence):
        return result
    source = sources.redact(spec.parameters.source)
    try:
        trust = Trust.from_bundle(decision.bundle) if decision.bundle else _spec_key_trust(spec, read_spec_key)
    except ParametersError as err:
        result.reason = err.reason
        return _refuse(result, decision, f"{source}: {err}")
    if trust is None:  # nothing to verify with yet: no fetch (the pods fetch and verify)
        key = spec.parameters.public_key
        result.warnings.append(f"Secret {key.secret_name if key else '?'} with the public key is not there yet; "
                               "the pods will verify the signature")
        return result
    try:
        where, data = fetch(spec.parameters)
    except TransportError as err:
        result.reason = err.reason
        message = f"the signature of {source} cannot be checked at admission: {err}"
        if decision.enforced:
            result.refusal = f"{message} ({decision.policies} enforces)"
        else:
            result.warnings.append(f"{message}; the pods will verify it")
        return result
    except VerificationError as err:
        result.reason = err.reason
        return _refuse(result, decision, f"{source}: {err}")
    try:
        verified = signing.verify_signature(data, trust, where)
    except ParametersError as err:
        result.reason = err.reason
        return _refuse(result, decision, f"signature {where} of {source}: {err}")
    for policy in decision.warn_only:
        if policy.trust is None:
            continue
        try:
            signing.verify_signature(data, Trust.from_bundle(TrustBundle(policies=(policy.trust,))), where)
        except ParametersError as err:
            result.warnings.append(f"ModelTrustPolicy {policy.name} (warn) would refuse this: {err}")
    digest = verified.manifest_digest.removeprefix("sha256:")
    pinned_by_us = old_evidence is not None and old_evidence.pinned and spec.parameters.sha256 == (
        old_evidence.manifest_digest.removeprefix("sha256:"))
    if spec.parameters.sha256 is not None and not pinned_by_us and spec.parameters.sha256 != digest:
        result.refusal = (f"spec.parameters.sha256 pins {spec.parameters.sha256}, but the signature {where} "
                          f"is of manifest {digest}")
        result.reason = DIGEST_MISMATCH
        return result
    pin = spec.parameters.sha256 is None or pinned_by_us
    result.reason = SIGNATURE_VALID
    result.pin = digest if pin else None
    result.evidence = Evidence(where, verified.signer, verified.trusted_by, verified.manifest_digest, now,
                               pinned=pin, issuer=verified.issuer)
    return result


def patch_of(review_: Review) -> dict[str, Any]:
    """The merge patch a mutating webhook answers with (pin and evidence)."""
    patch: dict[str, Any] = {}
    if review_.pin is not None:
        patch["spec"] = {"parameters": {"sha256": review_.pin}}
    if review_.evidence is not None:
        patch["metadata"] = {"annotations": {ADMISSION_ANNOTATION: review_.evidence.annotation()}}
    return patch
