"""CEL glue over Google's C++ runtime (`cel-expr-python`): the policy environment, readable errors.

One environment declares `input` and `prediction` (maps of a row's fields) with the strings and
math extensions. Compiled expressions are immutable and safe to evaluate from any thread. An
evaluation is bounded by the runtime's iteration budget (comprehensions cannot run away); one
that fails, or exceeds the budget, raises `CelEvaluationError`.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from cel_expr_python import cel
from cel_expr_python.ext.ext_math import ExtMath
from cel_expr_python.ext.ext_strings import ExtStrings

VARIABLES = ("input", "prediction")
_ROW = cel.Type.Map(cel.Type.STRING, cel.Type.DYN)
_ERROR_LINE = re.compile(r"ERROR: <input>:(?P<line>\d+):(?P<column>\d+): (?P<message>[^\n]*)")
_STATUS = re.compile(r"^[A-Z_]+: ")


class CelEvaluationError(Exception):
    """An expression failed on its input (a missing key, no matching overload, overflow, ...)."""


@functools.cache
def environment() -> cel.Env:
    """The one policy environment (built once per process)."""
    return cel.NewEnv(variables={name: _ROW for name in VARIABLES},
                      extensions=[ExtStrings(), ExtMath()])


def compile_expression(source: str) -> cel.Expression:
    """`source` parsed and type-checked against the environment.

    Raises:
        ValueError: it is not valid CEL here; the message is `compile_problem`'s.
    """
    try:
        return environment().compile(source)
    except RuntimeError as err:
        raise ValueError(compile_problem(str(err))) from err


def is_bool_or_dynamic(expression: cel.Expression) -> bool:
    """Whether the checker allows a bool result (a dynamic one is only known when evaluated)."""
    return expression.return_type() in (cel.Type.BOOL, cel.Type.DYN)


def evaluate(expression: cel.Expression, activation: dict[str, Any]) -> Any:
    """The expression's value on `activation`, as plain Python.

    Raises:
        CelEvaluationError: the evaluation failed (the message without its status code).
    """
    try:
        value = expression.eval(data=activation)
    except RuntimeError as err:  # the runtime's own limits (e.g. the iteration budget) raise
        raise CelEvaluationError(_STATUS.sub("", str(err)).removesuffix(" [INTERNAL]")) from err
    if value.type() == cel.Type.ERROR:
        raise CelEvaluationError(_STATUS.sub("", str(value)))
    return value.plain_value()


def compile_problem(message: str) -> str:
    """What is wrong with a CEL source, on one line: the first problem and where it is."""
    found = _ERROR_LINE.search(message)
    if found is None:
        return f"it does not compile ({_STATUS.sub('', message.strip())})"
    problem = found["message"].removeprefix("Syntax error: ")
    if problem.startswith("mismatched input '<EOF>'"):
        problem = "unexpected end of expression"
    elif problem.startswith(("mismatched input", "extraneous input")):
        problem = "unexpected " + problem.split(" ")[2]
    elif problem.startswith("token recognition error at: "):
        problem = "unexpected characters " + problem.removeprefix("token recognition error at: ")
    return f"{problem} at line {found['line']}, column {found['column']}"
