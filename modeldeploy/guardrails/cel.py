"""cel-python glue: one transpiling environment, CEL values as Python, readable evaluation errors."""

from __future__ import annotations

import threading
from typing import Any

import celpy
from celpy import celtypes
from celpy.celparser import CELParseError, CELParser
from celpy.evaluation import CELEvalError, TranspilerTree
from lark.exceptions import UnexpectedCharacters, UnexpectedToken

# cel-python's parser and transpiler keep module state: one compilation at a time (the
# operator compiles from several admission threads).
COMPILING = threading.Lock()


def environment() -> celpy.Environment:
    """A CEL environment for the transpiler, whatever used cel-python first in this process.

    cel-python keeps one parser per process, built with the tree class of the first
    environment created; the transpiler needs its own tree class (a subclass, which the
    interpreter accepts too), so a parser built for the interpreter is rebuilt.
    """
    parser = CELParser.CEL_PARSER
    if parser is not None and parser.options.tree_class is not TranspilerTree:
        CELParser.CEL_PARSER = None
    return celpy.Environment(runner_class=celpy.CompiledRunner)


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


def describe(err: CELEvalError) -> str:
    """The innermost message of a CEL evaluation error (the transpiler wraps the real one)."""
    args = err.args
    while len(args) >= 3 and args[0] == "evaluation error" and isinstance(args[2], tuple) and args[2]:
        args = args[2]
    return str(args[0]) if args else type(err).__name__


def compile_problem(err: Exception) -> str:
    """What is wrong with a CEL source, on one line (cel-python's own message is the source and a caret)."""
    if not isinstance(err, CELParseError):
        return f"it does not compile ({type(err).__name__}: {err})"
    cause = err.__context__
    if isinstance(cause, UnexpectedToken):
        what = "end of expression" if cause.token.type == "$END" else repr(str(cause.token))
        problem = f"unexpected {what}"
    elif isinstance(cause, UnexpectedCharacters):
        problem = f"unexpected character {cause.char!r}"
    else:
        problem = "syntax error"
    return f"{problem} at line {err.line}, column {err.column}"
