"""Policies: CEL conditions over `input` and `prediction`, with reject/override/clamp.

Two steps, so the operator can refuse what the server would: `compile_policies` checks a
list of the contract's `Policy` and compiles every CEL expression (no model needed: what
the admission webhook runs); `CompiledPolicies.bind` ties them to a model's outputs and
dry-runs every expression on its example row, so a reference to an unknown field fails at
startup, not on the first request. `PolicySet.apply` applies bound policies to one
prediction. Pure: no HTTP, no model loading.

Expressions are compiled and type-checked by Google's C++ CEL runtime (`cel-expr-python`,
a few microseconds per evaluation) against `input` and `prediction`; a `when` the checker
knows is not a bool is refused at compile time. Evaluations run within a per-request deadline
checked before every evaluation. A policy that cannot be evaluated on an input fails closed
with `EvaluationFailed`, naming the policy.

A model's `Guardrails` are two sets: the signed policies (the `policies.yaml` of its signed
tree) and the spec's (`server.yaml`). The spec's add to the signed ones and cannot remove
or weaken them: no spec policy may have a signed one's name (`PolicyConflict`), the signed
policies run first, and when a spec policy changed the prediction they run again on the
result, so no spec override undoes a signed clamp or reject. Everything that names a
policy says its `source` (`signed` or `spec`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

from cel_expr_python import cel

from modeldeploy.contract.pod import SIGNED_POLICIES as SIGNED_POLICIES_FILE
from modeldeploy.contract.spec import Policy
from modeldeploy.guardrails.cel import CelEvaluationError, compile_expression, evaluate, is_bool_or_dynamic

Row = dict[str, Any]
Source = Literal["signed", "spec"]
SIGNED: Final = "signed"  # from the model's signed tree (policies.yaml)
SPEC: Final = "spec"  # from the ModelDeployment's spec (server.yaml)


class PolicyError(ValueError):
    """The policy configuration is invalid; the message names the policy and the problem."""


class PolicyConflict(PolicyError):
    """A spec policy has the name of a signed one: it would replace a signed guardrail."""


class PolicyViolation(Exception):
    """A prediction the policies do not let through; `policy` and `source` name the deciding one."""

    def __init__(self, message: str, policy: str, source: Source) -> None:
        super().__init__(message)
        self.policy = policy
        self.source = source


class Rejected(PolicyViolation):
    """A `reject` policy matched."""


class EvaluationFailed(PolicyViolation):
    """A policy could not be evaluated on this input, or the deadline passed (fail closed)."""


class OutputField(Protocol):
    """One output of a model (the server's `FieldSpec` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...  # number, integer, string or boolean
    @property
    def enum(self) -> Sequence[Any] | None: ...


class ModelIO(Protocol):
    """What binding needs of a model (the server's `ModelCard` is one): its outputs and example rows."""

    @property
    def name(self) -> str: ...
    @property
    def outputs(self) -> Sequence[OutputField]: ...
    def example_input(self) -> Row: ...
    def example_output(self) -> Row: ...


@dataclass(frozen=True)
class Applied:
    """What one policy did to one prediction (reported in the response)."""

    policy: str
    source: Source
    action: str
    field: str
    original: Any
    value: Any
    message: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "source": self.source,
            "action": self.action,
            "field": self.field,
            "original": self.original,
            "value": self.value,
            "message": self.message,
        }


_KINDS: dict[str, tuple[type, ...]] = {"number": (int, float), "integer": (int,), "string": (str,), "boolean": (bool,)}


def _fits(output: OutputField, value: Any) -> bool:
    """Whether `value` is a valid value of `output`."""
    if isinstance(value, bool) and output.type != "boolean":
        return False
    if not isinstance(value, _KINDS[output.type]):
        return False
    return not output.enum or value in output.enum


@dataclass(frozen=True)
class CompiledPolicy:
    """A policy with its CEL programs compiled, not yet tied to a model."""

    spec: Policy
    source: Source
    when: cel.Expression
    expression: cel.Expression | None

    @property
    def programs(self) -> list[tuple[str, cel.Expression]]:
        """(key, program) of every expression the policy evaluates."""
        return [("when", self.when)] + ([("expression", self.expression)] if self.expression else [])


def _compile(name: str, key: str, source: str) -> cel.Expression:
    try:
        return compile_expression(source)
    except ValueError as err:
        raise PolicyError(f"policy {name!r}: invalid CEL in {key!r} ({source!r}): {err}") from err


def compile_policies(policies: Sequence[Policy], source: Source = SPEC) -> CompiledPolicies:
    """Compile every policy's CEL (what the server and the operator's admission both run).

    Raises:
        PolicyError: two policies share a name, or an expression is not valid CEL (the
            message names the policy, the key and the CEL problem).
    """
    compiled = []
    seen: set[str] = set()
    for index, spec in enumerate(policies):
        if spec.name in seen:
            raise PolicyError(f"policies[{index}]: duplicate policy name {spec.name!r}")
        seen.add(spec.name)
        when = _compile(spec.name, "when", spec.when)
        if not is_bool_or_dynamic(when):
            kind = when.return_type().name().lower()
            raise PolicyError(f"policy {spec.name!r}: 'when' must be a bool, {spec.when!r} is {kind}")
        expression = _compile(spec.name, "expression", spec.expression) if spec.expression else None
        compiled.append(CompiledPolicy(spec, source, when, expression))
    return CompiledPolicies(tuple(compiled))


@dataclass(frozen=True)
class CompiledPolicies:
    """Compiled policies, in order."""

    policies: tuple[CompiledPolicy, ...]

    def bind(self, model: ModelIO) -> PolicySet:
        """The policies applied to `model`'s predictions, dry-run on its example row.

        Raises:
            PolicyError: a policy targets no (or an unsuitable) output, an expression fails
                on the example row, or a `when` is not a bool.
        """
        policies = PolicySet([BoundPolicy(policy, _target(policy.spec, model)) for policy in self.policies])
        _dry_run(policies, model)
        return policies


def _target(spec: Policy, model: ModelIO) -> OutputField | None:
    """The output an override or clamp changes (None for reject)."""
    if spec.action == "reject":
        return None
    outputs = {f.name: f for f in model.outputs}
    if spec.field is None and len(outputs) != 1:
        raise PolicyError(f"policy {spec.name!r}: the model has several outputs; name one in 'field'")
    if spec.field is not None and spec.field not in outputs:
        raise PolicyError(f"policy {spec.name!r}: {spec.field!r} is not an output of {model.name!r}")
    field = outputs[spec.field] if spec.field is not None else model.outputs[0]
    if spec.action == "clamp" and field.type not in ("number", "integer"):
        raise PolicyError(f"policy {spec.name!r}: clamp needs a numeric output, {field.name!r} is {field.type}")
    if spec.action == "override" and "value" in spec.model_fields_set and not _fits(field, spec.value):
        raise PolicyError(f"policy {spec.name!r}: value {spec.value!r} is not a valid {field.name!r}")
    return field


@dataclass(frozen=True)
class BoundPolicy:
    """A compiled policy and the output it changes."""

    compiled: CompiledPolicy
    field: OutputField | None

    @property
    def spec(self) -> Policy:
        return self.compiled.spec

    @property
    def source(self) -> Source:
        return self.compiled.source

    def matches(self, activation: dict[str, Any]) -> bool:
        result = evaluate(self.compiled.when, activation)
        if not isinstance(result, bool):
            raise EvaluationFailed(
                f"policy {self.spec.name!r}: 'when' gave {type(result).__name__}, not a bool", self.spec.name,
                self.source,
            )
        return result

    def failed(self, problem: str) -> EvaluationFailed:
        """The failure of this policy on an input."""
        return EvaluationFailed(f"policy {self.spec.name!r} failed: {problem}", self.spec.name, self.source)

    def act(self, activation: dict[str, Any], prediction: Row) -> Applied:
        """Apply the action to `prediction` in place and say what changed.

        Raises:
            Rejected: the action is `reject`.
            EvaluationFailed: an override expression gives a value the output cannot hold.
        """
        spec = self.spec
        if spec.action == "reject":
            raise Rejected(spec.message or f"rejected by policy {spec.name!r}", spec.name, self.source)
        assert self.field is not None
        original = prediction[self.field.name]
        if spec.action == "override":
            expression = self.compiled.expression
            value = evaluate(expression, activation) if expression else spec.value
            if not _fits(self.field, value):
                raise EvaluationFailed(
                    f"policy {spec.name!r}: override value {value!r} is not a valid {self.field.name!r}", spec.name,
                    self.source,
                )
        else:
            value = original
            if spec.min is not None and value < spec.min:
                value = spec.min
            if spec.max is not None and value > spec.max:
                value = spec.max
            if self.field.type == "integer":
                value = int(value)
        prediction[self.field.name] = value
        return Applied(spec.name, self.source, spec.action, self.field.name, original, value, spec.message)


class PolicySet:
    """The bound policies of one model, applied in order."""

    def __init__(self, policies: list[BoundPolicy]) -> None:
        self.policies = policies

    def __len__(self) -> int:
        return len(self.policies)

    @property
    def names(self) -> list[str]:
        return [p.spec.name for p in self.policies]

    def apply(self, row: Row, prediction: Row, deadline: float | None = None) -> list[Applied]:
        """Run every policy over one prediction, in order; later ones see earlier changes.

        Args:
            row: the validated input.
            prediction: the output row, changed in place by override and clamp.
            deadline: a `time.monotonic()` by which evaluation must be done.

        Raises:
            Rejected: a `reject` policy matched.
            EvaluationFailed: a policy could not be evaluated, or the deadline passed (fail closed).
        """
        if not self.policies:
            return []
        applied = []
        policy = self.policies[0]
        try:
            activation = {"input": row, "prediction": dict(prediction)}
            for policy in self.policies:
                if deadline is not None and time.monotonic() > deadline:
                    raise EvaluationFailed(
                        f"policy {policy.spec.name!r} not evaluated: the policies ran out of policyTimeoutSeconds",
                        policy.spec.name, policy.source,
                    )
                if policy.matches(activation):
                    applied.append(policy.act(activation, prediction))
                    activation["prediction"] = dict(prediction)
        except CelEvaluationError as err:
            raise policy.failed(str(err)) from err
        except (ValueError, TypeError, OverflowError, ArithmeticError) as err:  # a value CEL cannot hold
            raise policy.failed(f"{type(err).__name__}: {err}") from err
        return applied


class Guardrails:
    """A model's policies: the signed ones, then the spec's, then the signed ones again if the spec's changed anything.

    Raises:
        PolicyConflict: a spec policy has the name of a signed one.
    """

    def __init__(self, signed: PolicySet, spec: PolicySet) -> None:
        clashing = sorted(set(signed.names) & set(spec.names))
        if clashing:
            raise PolicyConflict(
                f"spec policies {', '.join(map(repr, clashing))} have the names of signed guardrails "
                f"({SIGNED_POLICIES_FILE}); signed guardrails cannot be removed or replaced: rename the spec's"
            )
        self.signed = signed
        self.spec = spec

    def __len__(self) -> int:
        return len(self.signed) + len(self.spec)

    def describe(self) -> list[dict[str, str]]:
        """Every policy in order of first application: name, source and action."""
        return [{"name": p.spec.name, "source": p.source, "action": p.spec.action}
                for p in [*self.signed.policies, *self.spec.policies]]

    def apply(self, row: Row, prediction: Row, deadline: float | None = None) -> list[Applied]:
        """Run the guardrails over one prediction (see the module docstring); raises as `PolicySet.apply`."""
        applied = self.signed.apply(row, prediction, deadline)
        before = dict(prediction)
        applied += self.spec.apply(row, prediction, deadline)
        if prediction != before:
            applied += self.signed.apply(row, prediction, deadline)
        return applied


def _dry_run(policies: PolicySet, model: ModelIO) -> None:
    """Evaluate every expression once on the example row, so unknown names fail now."""
    activation = {"input": model.example_input(), "prediction": model.example_output()}
    for policy in policies.policies:
        for key, program in policy.compiled.programs:
            try:
                result = evaluate(program, activation)
            except CelEvaluationError as err:
                raise PolicyError(
                    f"policy {policy.spec.name!r}: {key!r} fails on the example input: {err}"
                ) from err
            if key == "when" and not isinstance(result, bool):
                raise PolicyError(f"policy {policy.spec.name!r}: 'when' must be a bool, got {type(result).__name__}")
