"""Guardrails: the one CEL policy engine, for the server (apply) and the operator (admission).

Above the contract (its `Policy`) and beside `modeldeploy.params`; needs cel-python only
(the `guardrails` dependency set), no web framework and no Kubernetes client.
"""

from modeldeploy.guardrails.policies import (
    Applied,
    CompiledPolicies,
    EvaluationFailed,
    ModelIO,
    PolicyError,
    PolicySet,
    PolicyViolation,
    Rejected,
    compile_policies,
)

__all__ = [
    "Applied",
    "CompiledPolicies",
    "EvaluationFailed",
    "ModelIO",
    "PolicyError",
    "PolicySet",
    "PolicyViolation",
    "Rejected",
    "compile_policies",
]
