"""Operator policies: CEL conditions over `input` and `prediction`, with reject/override/clamp.

Owns checking the `policies:` of the server config (the contract's `Policy`, the same type
the CRD and the operator use), compiling every CEL expression
once (and dry-running it against the model card's example row, so a reference to an
unknown field fails at startup, not on the first request), and applying the policies to
one prediction. Pure: no HTTP, no model loading.

Expressions are transpiled to Python (cel-python's `CompiledRunner`, several times faster
than its tree-walking interpreter). Its programs share module state while they run, so
policies are evaluated from one thread only: the dry run before the model is ready, then
the data plane's policy thread (never the event loop), within a per-request deadline
checked before every evaluation. A policy that cannot be evaluated on an input fails
closed with `PolicyFailed` (422), naming the policy.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import celpy
from celpy import celtypes
from celpy.adapter import json_to_cel
from celpy.celparser import CELParser
from celpy.evaluation import CELEvalError, TranspilerTree
from pydantic import ValidationError

from model_server.errors import PolicyFailed, PolicyRejected
from model_server.modelcard import FieldSpec, ModelCard
from modeldeploy.contract.spec import Policy
from modeldeploy.contract.validation import error_lines

Row = dict[str, Any]


class PolicyError(ValueError):
    """The policy configuration is invalid: the server must not become ready."""


@dataclass(frozen=True)
class Applied:
    """What one policy did to one prediction (reported in the response)."""

    policy: str
    action: str
    field: str
    original: Any
    value: Any
    message: str | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "action": self.action,
            "field": self.field,
            "original": self.original,
            "value": self.value,
            "message": self.message,
        }


def to_python(value: Any) -> Any:
    """A CEL value as plain JSON-serialisable Python."""
    if isinstance(value, celtypes.BoolType):
        return bool(value)
    if isinstance(value, celtypes.IntType | celtypes.UintType):
        return int(value)
    if isinstance(value, celtypes.DoubleType):
        return float(value)
    if isinstance(value, celtypes.StringType):
        return str(value)
    if isinstance(value, celtypes.MapType):
        return {to_python(k): to_python(v) for k, v in value.items()}
    if isinstance(value, celtypes.ListType):
        return [to_python(v) for v in value]
    return value


def _fits(spec: FieldSpec, value: Any) -> bool:
    """Whether `value` is a valid value of the output field `spec`."""
    kinds: dict[str, tuple[type, ...]] = {
        "number": (int, float),
        "integer": (int,),
        "string": (str,),
        "boolean": (bool,),
    }
    if isinstance(value, bool) and spec.type != "boolean":
        return False
    if not isinstance(value, kinds[spec.type]):
        return False
    return not spec.enum or value in spec.enum


class CompiledPolicy:
    """A policy with its CEL programs compiled."""

    def __init__(self, spec: Policy, env: celpy.Environment, card: ModelCard) -> None:
        self.spec = spec
        self.when = _compile(env, spec.name, "when", spec.when)
        self.expression = _compile(env, spec.name, "expression", spec.expression) if spec.expression else None
        self.field = _target_field(spec, card)

    def matches(self, activation: dict[str, Any]) -> bool:
        result = self.when.evaluate(activation)
        if not isinstance(result, celtypes.BoolType):
            raise PolicyFailed(f"policy {self.spec.name!r}: 'when' gave {type(result).__name__}, not a bool")
        return bool(result)

    def act(self, activation: dict[str, Any], prediction: Row) -> Applied:
        """Apply the action to `prediction` in place and say what changed.

        Raises:
            PolicyRejected: the action is `reject`.
            PolicyFailed: an override expression gives a value the output cannot hold.
        """
        spec = self.spec
        if spec.action == "reject":
            message = spec.message or f"rejected by policy {spec.name!r}"
            raise PolicyRejected(message, policy=spec.name)
        assert self.field is not None
        original = prediction[self.field.name]
        if spec.action == "override":
            value = to_python(self.expression.evaluate(activation)) if self.expression else spec.value
            if not _fits(self.field, value):
                raise PolicyFailed(
                    f"policy {spec.name!r}: override value {value!r} is not a valid {self.field.name!r}"
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
        return Applied(spec.name, spec.action, self.field.name, original, value, spec.message)


def describe(err: CELEvalError) -> str:
    """The innermost message of a CEL evaluation error (the transpiler wraps the real one)."""
    args = err.args
    while len(args) >= 3 and args[0] == "evaluation error" and isinstance(args[2], tuple) and args[2]:
        args = args[2]
    return str(args[0]) if args else type(err).__name__


def _compile(env: celpy.Environment, name: str, key: str, source: str) -> celpy.Runner:
    try:
        return env.program(env.compile(source))
    except Exception as err:  # celpy raises parse errors of several types
        raise PolicyError(f"policy {name!r}: invalid CEL in {key!r}: {source!r}: {err}") from err


def _target_field(spec: Policy, card: ModelCard) -> FieldSpec | None:
    if spec.action == "reject":
        return None
    outputs = {f.name: f for f in card.outputs}
    if spec.field is None and len(outputs) != 1:
        raise PolicyError(f"policy {spec.name!r}: the model has several outputs; name one in 'field'")
    if spec.field is not None and spec.field not in outputs:
        raise PolicyError(f"policy {spec.name!r}: {spec.field!r} is not an output of {card.name!r}")
    field = outputs[spec.field] if spec.field is not None else card.outputs[0]
    if spec.action == "clamp" and field.type not in ("number", "integer"):
        raise PolicyError(f"policy {spec.name!r}: clamp needs a numeric output, {field.name!r} is {field.type}")
    if spec.action == "override" and "value" in spec.model_fields_set and not _fits(field, spec.value):
        raise PolicyError(f"policy {spec.name!r}: value {spec.value!r} is not a valid {field.name!r}")
    return field


class PolicySet:
    """The compiled policies of one model, applied in order."""

    def __init__(self, policies: list[CompiledPolicy]) -> None:
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
            PolicyRejected: a `reject` policy matched.
            PolicyFailed: a policy could not be evaluated, or the deadline passed (fail closed);
                `details["policy"]` names it.
        """
        if not self.policies:
            return []
        applied = []
        policy = self.policies[0]
        try:
            activation = {"input": json_to_cel(row), "prediction": json_to_cel(prediction)}
            for policy in self.policies:
                if deadline is not None and time.monotonic() > deadline:
                    raise PolicyFailed(
                        f"policy {policy.spec.name!r} not evaluated: the policies ran out of policyTimeoutSeconds",
                        policy=policy.spec.name,
                    )
                if policy.matches(activation):
                    applied.append(policy.act(activation, prediction))
                    activation["prediction"] = json_to_cel(prediction)
        except CELEvalError as err:
            raise PolicyFailed(f"policy {policy.spec.name!r} failed: {describe(err)}", policy=policy.spec.name) from err
        except PolicyFailed as err:
            err.details.setdefault("policy", policy.spec.name)
            raise
        except (ValueError, TypeError, OverflowError, ArithmeticError) as err:  # a value CEL cannot hold
            raise PolicyFailed(
                f"policy {policy.spec.name!r} failed: {type(err).__name__}: {err}", policy=policy.spec.name
            ) from err
        return applied


def _compiled_environment() -> celpy.Environment:
    """A CEL environment for the transpiler, whatever used cel-python first in this process.

    cel-python keeps one parser per process, built with the tree class of the first
    environment created; the transpiler needs its own tree class (a subclass, which the
    interpreter accepts too), so a parser built for the interpreter is rebuilt.
    """
    parser = CELParser.CEL_PARSER
    if parser is not None and parser.options.tree_class is not TranspilerTree:
        CELParser.CEL_PARSER = None
    return celpy.Environment(runner_class=celpy.CompiledRunner)


def compile_policies(raw: Sequence[Policy | Mapping[str, Any]], card: ModelCard) -> PolicySet:
    """Validate (the contract's `Policy`) and compile the policies, then dry-run them on the card's example row.

    Raises:
        PolicyError: a policy is malformed, names an unknown field, or has invalid CEL.
    """
    env = _compiled_environment()
    compiled = []
    seen: set[str] = set()
    for index, entry in enumerate(raw):
        try:
            spec = entry if isinstance(entry, Policy) else Policy.model_validate(entry)
        except ValidationError as err:
            raise PolicyError("; ".join(error_lines(err, f"policies[{index}]"))) from err
        if spec.name in seen:
            raise PolicyError(f"policies[{index}]: duplicate policy name {spec.name!r}")
        seen.add(spec.name)
        compiled.append(CompiledPolicy(spec, env, card))
    policies = PolicySet(compiled)
    _dry_run(policies, card)
    return policies


def _dry_run(policies: PolicySet, card: ModelCard) -> None:
    """Evaluate every expression once on the example row, so unknown names fail now."""
    activation = {
        "input": json_to_cel(card.example_input()),
        "prediction": json_to_cel(card.example_output()),
    }
    for policy in policies.policies:
        programs = [("when", policy.when)] + ([("expression", policy.expression)] if policy.expression else [])
        for key, program in programs:
            try:
                result = program.evaluate(activation)
            except CELEvalError as err:
                raise PolicyError(
                    f"policy {policy.spec.name!r}: {key!r} fails on the example input: {describe(err)}"
                ) from err
            if key == "when" and not isinstance(result, celtypes.BoolType):
                raise PolicyError(f"policy {policy.spec.name!r}: 'when' must be a bool, got {type(result).__name__}")
