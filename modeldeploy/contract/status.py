"""The ModelDeployment's status as typed data, with conditions as the Kubernetes API conventions define them.

The operator computes a `ModelDeploymentStatus` and writes `patch()` as a merge patch; the CRD's
status schema is generated from these models; users and tests match on the condition types
below and the reasons of `modeldeploy.contract.reasons`.
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from modeldeploy.contract.rollout import ROLLOUT_HEALTHY, AnalysisResult, RolloutStatus

PARAMETERS_VERIFIED: Final = "ParametersVerified"
AVAILABLE: Final = "Available"
PROGRESSING: Final = "Progressing"
READY: Final = "Ready"
CONDITION_TYPES: Final = (PARAMETERS_VERIFIED, AVAILABLE, PROGRESSING, READY, ROLLOUT_HEALTHY)

ConditionStatus = Literal["True", "False", "Unknown"]


class StatusModel(BaseModel):
    """camelCase keys as the API server stores them; unknown keys refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Condition(StatusModel):
    """One aspect of the ModelDeployment's state (metav1.Condition)."""

    type: str = Field(description="ParametersVerified, Available, Progressing or Ready.")
    status: ConditionStatus
    reason: str = Field(description="CamelCase reason, one of modeldeploy.contract.reasons.")
    message: str = Field(description="One human-readable line.")
    last_transition_time: str = Field(alias="lastTransitionTime", json_schema_extra={"format": "date-time"},
                                      description="When the status last changed.")
    observed_generation: int = Field(alias="observedGeneration", ge=0,
                                     description="The spec generation this condition describes.")


class Verification(StatusModel):
    """The verification result of the current version's parameters."""

    signer: str | None = Field(default=None, description=(
        "Who signed: the key's fingerprint (sha256:...) or the signing certificate's subject."
    ))
    issuer: str | None = Field(default=None, description="The signing certificate's issuer (certificate method).")
    trusted_by: str | None = Field(default=None, alias="trustedBy", description=(
        "Which trust admitted the signer: ModelTrustPolicy/NAME signer NAME, or spec.parameters.publicKey."
    ))
    key_fingerprint: str | None = Field(default=None, alias="keyFingerprint",
                                        description="Fingerprint of the public key that verified them.")
    manifest_digest: str | None = Field(default=None, alias="manifestDigest",
                                        description="Digest of the signed manifest, e.g. sha256:...")
    hash_algorithm: str | None = Field(default=None, alias="hashAlgorithm",
                                       description="How the files were hashed: sha256, blake2 or blake3, "
                                       "with ' shards' for sharded hashing.")
    signed_policies: list[str] | None = Field(default=None, alias="signedPolicies",
                                              description="Policies that came signed with the parameters "
                                              "(policies.yaml); the spec's policies add to them.")
    admitted_at: str | None = Field(default=None, alias="admittedAt",
                                    description="When the admission webhook verified the signature.")
    verified_at: str | None = Field(default=None, alias="verifiedAt", description="When fetch verified them.")
    failed_files: list[str] | None = Field(default=None, alias="failedFiles",
                                           description="Files that failed verification, when it failed.")


class ModelDeploymentStatus(StatusModel):
    """What the operator observed."""

    observed_generation: int = Field(alias="observedGeneration",
                                     description="The spec generation this status describes.")
    replicas: int | None = None
    ready_replicas: int | None = Field(default=None, alias="readyReplicas")
    updated_replicas: int | None = Field(default=None, alias="updatedReplicas")
    ready: str | None = Field(default=None, description="Ready replicas / desired replicas, e.g. 2/2.")
    selector: str | None = Field(default=None, description="Label selector of the pods (for the scale subresource).")
    endpoint: str | None = Field(default=None, description="In-cluster URL of the model's Service.")
    verification: Verification | None = None
    rollout: RolloutStatus | None = None
    load_test: list[AnalysisResult] | None = Field(
        default=None, alias="loadTest",
        description="spec.loadTest's summary of each revision (newest last, at most 10), to compare revisions.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="ParametersVerified, Available, Progressing, Ready and RolloutHealthy.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )

    def patch(self) -> dict[str, Any]:
        """The merge patch that makes the stored status this one.

        Fields given (even as None) are written, None deleting a stale value; fields never
        given (a spec error reports only the conditions) keep what is stored.
        """
        return self.model_dump(by_alias=True, exclude_unset=True)


def find(conditions: list[Condition], type_: str) -> Condition | None:
    """The condition of `type_`, or None."""
    return next((c for c in conditions if c.type == type_), None)
