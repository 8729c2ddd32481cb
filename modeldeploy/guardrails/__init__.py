"""Guardrails: the one CEL policy engine, for the server (apply) and the operator (admission).

Above the contract (its `Policy`) and beside `modeldeploy.params`; needs cel-python only
(the `guardrails` dependency set), no web framework and no Kubernetes client.
"""

from modeldeploy.guardrails.policies import (
    SIGNED,
    SPEC,
    Applied,
    CompiledPolicies,
    EvaluationFailed,
    Guardrails,
    ModelIO,
    PolicyConflict,
    PolicyError,
    PolicySet,
    PolicyViolation,
    Rejected,
    Source,
    compile_policies,
)

__all__ = [
    "SIGNED",
    "SPEC",
    "Applied",
    "CompiledPolicies",
    "EvaluationFailed",
    "Guardrails",
    "ModelIO",
    "PolicyConflict",
    "PolicyError",
    "PolicySet",
    "PolicyViolation",
    "Rejected",
    "Source",
    "compile_policies",
]
