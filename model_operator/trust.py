"""Which signers a ModelDeployment must be signed by: ModelTrustPolicies resolved into the contract's TrustBundle.

Pure functions over already-read objects: `resolve_policy` turns a policy and the PEM text of
its Secrets/ConfigMaps into a `PolicyTrust` (plus the status counts); `decide` picks, for one
ModelDeployment, the trust its pods verify with and the policies that only warn. The admission
webhook and the reconcile both call `decide`, so what was admitted is what the pods check.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from modeldeploy.contract import reasons
from modeldeploy.contract.spec import ModelDeploymentSpec
from modeldeploy.contract.trust import (
    ENFORCE,
    SPEC_KEY_POLICY,
    MaterialRef,
    ModelTrustPolicySpec,
    ModelTrustPolicyStatus,
    PolicyTrust,
    TrustBundle,
    TrustedCertificate,
    TrustedSigner,
)
from modeldeploy.contract.validation import error_lines

PEM_MARKER = "-----BEGIN "
ReadMaterial = Callable[[MaterialRef], str | None]  # the PEM text, or None when the Secret/ConfigMap/key is missing


@dataclass(frozen=True)
class ResolvedPolicy:
    """One ModelTrustPolicy with its material read."""

    name: str
    spec: ModelTrustPolicySpec
    trust: PolicyTrust | None  # None when no signer's material could be read
    problems: tuple[str, ...] = ()

    @property
    def enforcing(self) -> bool:
        return self.spec.mode == ENFORCE

    def status(self, generation: int | None) -> ModelTrustPolicyStatus:
        """The counts `kubectl get modeltrustpolicies` shows."""
        signers = self.trust.signers if self.trust else ()
        return ModelTrustPolicyStatus(
            observed_generation=generation,
            keys=sum(1 for signer in signers if signer.public_key_pem),
            certificates=sum(1 for signer in signers if signer.certificate),
            problems=self.problems,
        )


def parse_policy(name: str, spec: Mapping[str, Any]) -> ModelTrustPolicySpec:
    """A stored ModelTrustPolicy's spec (the API server validated it; this only re-types it).

    Raises:
        ValueError: the spec does not parse (e.g. a CRD older than this operator).
    """
    try:
        return ModelTrustPolicySpec.model_validate(dict(spec))
    except ValidationError as err:
        raise ValueError(f"ModelTrustPolicy {name}: {'; '.join(error_lines(err, 'spec'))}") from None


def resolve_policy(name: str, spec: ModelTrustPolicySpec, read: ReadMaterial) -> ResolvedPolicy:
    """Read every signer's PEM material; a signer whose material is missing is left out and named in `problems`."""
    signers: list[TrustedSigner] = []
    problems: list[str] = []
    for signer in spec.signers:
        ref = signer.material()
        text = read(ref)
        if text is None:
            problems.append(f"signer {signer.name}: {ref.describe()} not found")
            continue
        if PEM_MARKER not in text:
            problems.append(f"signer {signer.name}: {ref.describe()} holds no PEM")
            continue
        if signer.certificate is not None:
            certificate = TrustedCertificate(roots_pem=text, subjects=signer.certificate.subjects,
                                             sans=signer.certificate.sans)
            signers.append(TrustedSigner(name=signer.name, certificate=certificate))
        else:
            signers.append(TrustedSigner(name=signer.name, public_key_pem=text))
    trust = PolicyTrust(policy=name, signers=tuple(signers)) if signers else None
    return ResolvedPolicy(name, spec, trust, tuple(problems))


@dataclass(frozen=True)
class TrustDecision:
    """What one ModelDeployment's signature must satisfy."""

    bundle: TrustBundle | None  # the pods verify with this; None: with spec.parameters.publicKey
    enforced: bool  # an enforcing policy decides (refuse at admission) rather than only warn
    warn_only: tuple[ResolvedPolicy, ...] = ()  # warn-mode policies checked for warnings only
    problem: str | None = None  # why no trust can be decided
    reason: str | None = None
    ignored: list[str] = field(default_factory=list)  # notes for the user (e.g. an ignored publicKey)

    @property
    def policies(self) -> str:
        """The deciding policies, for messages."""
        if self.bundle is None:
            return SPEC_KEY_POLICY
        return ", ".join(f"ModelTrustPolicy {trust.policy}" for trust in self.bundle.policies)


def selecting(policies: Iterable[ResolvedPolicy], namespace_labels: Mapping[str, str]) -> list[ResolvedPolicy]:
    """The policies whose namespaceSelector selects a namespace with these labels, by name."""
    labels = dict(namespace_labels)
    return sorted((p for p in policies if p.spec.namespace_selector.matches(labels)), key=lambda p: p.name)


def decide(spec: ModelDeploymentSpec, policies: Iterable[ResolvedPolicy]) -> TrustDecision:
    """The trust for a ModelDeployment of a namespace that these (selecting) policies apply to.

    Enforcing policies decide alone (all of them must be satisfied) and the spec's publicKey is
    ignored; without one, the spec's publicKey decides and warn-mode policies only warn; with
    neither, warn-mode policies decide (something must verify the pods).
    """
    applicable = list(policies)
    enforcing = [policy for policy in applicable if policy.enforcing]
    warning = [policy for policy in applicable if not policy.enforcing]
    unresolved = [policy for policy in enforcing if policy.trust is None]
    if unresolved:
        detail = "; ".join(f"ModelTrustPolicy {p.name}: {', '.join(p.problems) or 'no signers'}" for p in unresolved)
        return TrustDecision(None, True, problem=f"no signer of an enforcing policy can be read: {detail}",
                             reason=reasons.TRUST_POLICY_UNRESOLVED)
    if enforcing:
        ignored = [] if spec.parameters.public_key is None else [
            f"spec.parameters.publicKey is ignored: {', '.join(f'ModelTrustPolicy {p.name}' for p in enforcing)} "
            "decides the trusted signers"
        ]
        bundle = TrustBundle(policies=tuple(p.trust for p in enforcing if p.trust))
        return TrustDecision(bundle, True, ignored=ignored)
    if spec.parameters.public_key is not None:
        return TrustDecision(None, False, warn_only=tuple(warning))
    usable = [policy for policy in warning if policy.trust is not None]
    if usable:
        return TrustDecision(TrustBundle(policies=tuple(p.trust for p in usable if p.trust)), False)
    return TrustDecision(
        None, False,
        problem="no signer to verify with: set spec.parameters.publicKey, or create a ModelTrustPolicy "
        "that selects this namespace",
        reason=reasons.NO_TRUSTED_SIGNER,
    )
