"""Every reason code a ModelDeployment's conditions can carry (CamelCase, matched by users and tests).

The fetch init container writes a verification reason into its termination record, the
server logs the same codes when it refuses to load, and the operator copies them into
`ParametersVerified` and `Ready`. The operator's own reasons follow.
"""

from __future__ import annotations

from typing import Final

# Verification: what fetch, `modeldeploy verify` and the server's load report.
SIGNATURE_VALID: Final = "SignatureValid"
SIGNATURE_MISSING: Final = "SignatureMissing"
SIGNATURE_MALFORMED: Final = "SignatureMalformed"
SIGNATURE_INVALID: Final = "SignatureInvalid"
UNSUPPORTED_SIGNATURE: Final = "UnsupportedSignature"
KEY_MISMATCH: Final = "KeyMismatch"
UNTRUSTED_SIGNER: Final = "UntrustedSigner"  # verified by nobody the trust (policy or spec key) names
TRUST_INVALID: Final = "TrustInvalid"  # trust.json or its PEM material cannot be read
PUBLIC_KEY_INVALID: Final = "PublicKeyInvalid"
PRIVATE_KEY_INVALID: Final = "PrivateKeyInvalid"
FILES_DIFFER: Final = "FilesDiffer"
FILE_NOT_SIGNED: Final = "FileNotSigned"
DIGEST_MISMATCH: Final = "DigestMismatch"
UNSAFE_ARCHIVE: Final = "UnsafeArchive"
UNSAFE_FILE: Final = "UnsafeFile"
TOO_LARGE: Final = "TooLarge"
DESTINATION_INVALID: Final = "DestinationInvalid"
SIGNED_POLICIES_INVALID: Final = "SignedPoliciesInvalid"  # the signed policies.yaml is not a policy list

# Transport: the parameters or their signature could not be read.
SOURCE_NOT_FOUND: Final = "SourceNotFound"
SOURCE_INVALID: Final = "SourceInvalid"
DOWNLOAD_FAILED: Final = "DownloadFailed"
DEADLINE_EXCEEDED: Final = "DeadlineExceeded"
FETCH_FAILED: Final = "FetchFailed"  # fetch ended without a record, or with an unexpected error

VERIFICATION: Final = frozenset({
    SIGNATURE_VALID, SIGNATURE_MISSING, SIGNATURE_MALFORMED, SIGNATURE_INVALID, UNSUPPORTED_SIGNATURE,
    KEY_MISMATCH, UNTRUSTED_SIGNER, TRUST_INVALID, PUBLIC_KEY_INVALID, PRIVATE_KEY_INVALID, FILES_DIFFER,
    FILE_NOT_SIGNED, DIGEST_MISMATCH, UNSAFE_ARCHIVE, UNSAFE_FILE, TOO_LARGE, DESTINATION_INVALID,
    SIGNED_POLICIES_INVALID,
})
TRANSPORT: Final = frozenset({SOURCE_NOT_FOUND, SOURCE_INVALID, DOWNLOAD_FAILED, DEADLINE_EXCEEDED, FETCH_FAILED})
FETCH: Final = VERIFICATION | TRANSPORT

# The operator's: why a ModelDeployment is (not) Ready, and what its rollout does.
SPEC_INVALID: Final = "SpecInvalid"
CHILD_REJECTED: Final = "ChildRejected"  # the API server refused a rendered child
POLICY_CONFLICT: Final = "PolicyConflict"  # a spec policy has the name of a signed guardrail
NO_TRUSTED_SIGNER: Final = "NoTrustedSigner"  # no ModelTrustPolicy applies and no spec.parameters.publicKey
TRUST_POLICY_UNRESOLVED: Final = "TrustPolicyUnresolved"  # a policy's Secret or ConfigMap cannot be read
SERVING: Final = "Serving"
SCALED_TO_ZERO: Final = "ScaledToZero"
ROLLOUT_PROGRESSING: Final = "RolloutProgressing"
ROLLOUT_COMPLETE: Final = "RolloutComplete"
PROGRESS_DEADLINE_EXCEEDED: Final = "ProgressDeadlineExceeded"
NO_PODS: Final = "NoPods"

# RolloutHealthy: how the last canary or load test of the spec's revision went.
CANARY_PROGRESSING: Final = "CanaryProgressing"  # canary pods starting, an analysis running, or promoting
PROMOTED: Final = "Promoted"  # the spec's revision is stable (after its analyses passed, if any)
ROLLED_BACK: Final = "RolledBack"  # an analysis failed a gate: the canary was removed, the stable kept serving
CANARY_NOT_READY: Final = "CanaryNotReady"  # the canary pods were not ready within progressDeadlineSeconds
ANALYSIS_FAILED: Final = "AnalysisFailed"  # the analysis Job measured nothing (its error says why)
LOAD_TEST_FAILED: Final = "LoadTestFailed"  # spec.loadTest's run of the stable revision failed a gate
PENDING: Final = "Pending"

# The server's readiness (ReadinessReport.reason): SERVING when ready; otherwise one of these, a
# verification reason (at load, or FilesDiffer from a recheck), POLICY_CONFLICT, or SPEC_INVALID (a spec
# policy the server cannot apply to this model).
LOADING: Final = "Loading"  # the model is still loading
DRAINING: Final = "Draining"  # shutting down: requests already accepted finish
LOAD_FAILED: Final = "LoadFailed"  # the flavor could not load the verified parameters
