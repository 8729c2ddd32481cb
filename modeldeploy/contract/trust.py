"""Who may sign a model: the `ModelTrustPolicy` API and the resolved trust the pods verify with.

A cluster admin writes a `ModelTrustPolicy` (cluster-scoped): the namespaces it applies to, the
trusted signers, and `mode: enforce | warn`. Each signer is exactly one kind: an EC `publicKey`
or a `certificate` (trusted roots with optional subject and SAN constraints); a new kind (e.g.
Sigstore keyless: issuer + subject) is one more optional member, so adding it breaks nothing.

The operator resolves a policy's Secrets and ConfigMaps into a `TrustBundle` (public material
only, inline PEM). The admission webhook verifies a signature against it, the operator writes
it into the model's ConfigMap as `trust.json`, and the init container and the server verify
with exactly that file (`modeldeploy fetch|serve|verify --trust trust.json`). A signature is
trusted when, for every policy of the bundle, one of its signers verifies it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from modeldeploy.contract.spec import ContractModel, rules

TRUST_KIND = "ModelTrustPolicy"
TRUST_PLURAL = "modeltrustpolicies"
TRUST_SINGULAR = "modeltrustpolicy"
TRUST_SHORT_NAMES = ("mtp",)
ENFORCE = "enforce"
WARN = "warn"
Mode = Literal["enforce", "warn"]
SPEC_KEY_POLICY = "spec.parameters.publicKey"  # the bundle's policy name when no ModelTrustPolicy applies


class LabelSelectorRequirement(ContractModel):
    """One matchExpressions entry (metav1.LabelSelectorRequirement)."""

    key: str = Field(min_length=1)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: tuple[str, ...] = ()


class LabelSelector(ContractModel):
    """Which namespaces, by their labels (metav1.LabelSelector); empty selects every namespace."""

    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    match_expressions: tuple[LabelSelectorRequirement, ...] = Field(default=(), alias="matchExpressions")

    def matches(self, labels: dict[str, str]) -> bool:
        """Whether an object with `labels` is selected."""
        if any(labels.get(key) != value for key, value in self.match_labels.items()):
            return False
        for requirement in self.match_expressions:
            present = requirement.key in labels
            value = labels.get(requirement.key)
            if requirement.operator == "In" and value not in requirement.values:
                return False
            if requirement.operator == "NotIn" and present and value in requirement.values:
                return False
            if requirement.operator == "Exists" and not present:
                return False
            if requirement.operator == "DoesNotExist" and present:
                return False
        return True


class MaterialRef(ContractModel):
    """A key of a Secret or a ConfigMap in the operator's namespace holding PEM text."""

    model_config = ContractModel.model_config | {"json_schema_extra": rules((
        "has(self.secretName) != has(self.configMapName)", "name exactly one of secretName or configMapName",
    ))}

    secret_name: str | None = Field(default=None, alias="secretName", min_length=1)
    config_map_name: str | None = Field(default=None, alias="configMapName", min_length=1)
    key: str = Field(min_length=1, pattern=r"^[-._a-zA-Z0-9]+$", description="Key within the Secret or ConfigMap.")

    @model_validator(mode="after")
    def _one_source(self) -> MaterialRef:
        if (self.secret_name is None) == (self.config_map_name is None):
            raise ValueError("name exactly one of secretName or configMapName")
        return self

    @property
    def source(self) -> tuple[str, str]:
        """(`Secret` or `ConfigMap`, its name)."""
        return ("Secret", str(self.secret_name)) if self.secret_name else ("ConfigMap", str(self.config_map_name))

    def describe(self) -> str:
        """`Secret/NAME key KEY` or `ConfigMap/NAME key KEY`, for messages."""
        kind, name = self.source
        return f"{kind}/{name} key {self.key}"


class CertificateSigner(ContractModel):
    """Signatures made with the `model-signing` certificate method, chaining to trusted roots."""

    roots: MaterialRef = Field(description="PEM bundle of the trusted root (and intermediate) certificates.")
    subjects: tuple[str, ...] = Field(
        default=(), description="If set, the signing certificate's subject (RFC 4514, e.g. CN=release,O=Example) "
        "must be one of these.",
    )
    sans: tuple[str, ...] = Field(
        default=(), description="If set, the signing certificate must carry one of these subject alternative "
        "names (email, URI or DNS name).",
    )


class Signer(ContractModel):
    """One trusted signer: exactly one of publicKey or certificate."""

    model_config = ContractModel.model_config | {"json_schema_extra": rules((
        "[has(self.publicKey), has(self.certificate)].filter(x, x).size() == 1",
        "a signer is exactly one of publicKey or certificate",
    ))}

    name: str = Field(min_length=1, max_length=63, description="Shown in status and messages.")
    public_key: MaterialRef | None = Field(default=None, alias="publicKey",
                                           description="A PEM EC public key (model-signing key method).")
    certificate: CertificateSigner | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Signer:
        if (self.public_key is None) == (self.certificate is None):
            raise ValueError(f"signer {self.name!r} is exactly one of publicKey or certificate")
        return self

    def material(self) -> MaterialRef:
        """Where this signer's PEM text is: the public key, or the certificate roots."""
        if self.public_key is not None:
            return self.public_key
        assert self.certificate is not None  # one of the two, checked above
        return self.certificate.roots


class ModelTrustPolicySpec(ContractModel):
    """Which signers the ModelDeployments of the selected namespaces must be signed by."""

    namespace_selector: LabelSelector = Field(default_factory=LabelSelector, alias="namespaceSelector",
                                              description="Namespaces this policy applies to; empty: all.")
    mode: Mode = Field(default="enforce", description=(
        "enforce: refuse at admission and verify pods with these signers only; warn: admit with a "
        "warning, pods keep verifying with spec.parameters.publicKey where set."
    ))
    signers: tuple[Signer, ...] = Field(
        min_length=1, max_length=32, description="Trusted signers; several keys allow rotation.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


class ModelTrustPolicyStatus(ContractModel):
    """What the operator resolved (counts of the signers whose material it could read)."""

    observed_generation: int | None = Field(default=None, alias="observedGeneration")
    keys: int = Field(default=0, description="Public-key signers resolved.")
    certificates: int = Field(default=0, description="Certificate signers resolved.")
    problems: tuple[str, ...] = Field(default=(), description="Signers whose material could not be read, and why.")


# ---- resolved trust: what the webhook, fetch and the server verify with ----


class TrustedCertificate(ContractModel):
    """A certificate signer with its roots read (inline PEM)."""

    roots_pem: str = Field(alias="rootsPem", min_length=1)
    subjects: tuple[str, ...] = ()
    sans: tuple[str, ...] = ()


class TrustedSigner(ContractModel):
    """A signer with its public material inline: exactly one of publicKeyPem or certificate."""

    name: str = Field(min_length=1)
    public_key_pem: str | None = Field(default=None, alias="publicKeyPem")
    certificate: TrustedCertificate | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> TrustedSigner:
        if (self.public_key_pem is None) == (self.certificate is None):
            raise ValueError(f"trusted signer {self.name!r} is exactly one of publicKeyPem or certificate")
        return self


class PolicyTrust(ContractModel):
    """One policy's signers: a signature must verify with at least one of them."""

    policy: str = Field(min_length=1, description="ModelTrustPolicy name, or spec.parameters.publicKey.")
    signers: tuple[TrustedSigner, ...] = Field(min_length=1)


class TrustBundle(ContractModel):
    """`trust.json`: every policy a signature must satisfy (all of them; one signer of each)."""

    policies: tuple[PolicyTrust, ...] = Field(min_length=1)

    def document(self) -> str:
        """The JSON file as written into the model's ConfigMap (stable: same bundle, same bytes)."""
        return self.model_dump_json(by_alias=True, exclude_defaults=True, indent=1)
