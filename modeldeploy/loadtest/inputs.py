"""Request bodies: random values drawn from the model's input JSON Schema, or lines of a JSONL file.

Pure: a seeded `random.Random` in, JSON-serialisable values out; no network.
The generator covers what the model server's schemas use (objects, arrays, numbers
and integers with bounds, strings, booleans, enum/const, anyOf/oneOf/allOf with one
branch, local `$ref`s) and raises `UnsupportedSchema` for anything it cannot satisfy
rather than send bodies the model would reject. Of `anyOf`/`oneOf` it takes the first
branch, so the server's "one row or a batch of rows" schema gives single rows.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

DEFAULT_SPAN = 100.0
MAX_DEPTH = 32


class UnsupportedSchema(ValueError):
    """The schema uses something the generator cannot produce valid values for."""


class InputFileError(ValueError):
    """The JSONL file of inputs is missing, empty or has a line that is not JSON."""


def sample(schema: Mapping[str, Any], rng: random.Random, root: Mapping[str, Any] | None = None) -> Any:
    """One random value valid for `schema`.

    Args:
        schema: a JSON Schema (draft 2020-12 / OpenAPI 3.1 subset).
        rng: the source of randomness; seed it for repeatable bodies.
        root: the document `$ref`s resolve against; defaults to `schema`.

    Raises:
        UnsupportedSchema: a construct the generator does not handle.
    """
    return _sample(schema, rng, root if root is not None else schema, 0)


def _sample(schema: Mapping[str, Any], rng: random.Random, root: Mapping[str, Any], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise UnsupportedSchema("schema nests too deeply (recursive $ref?)")
    if "$ref" in schema:
        return _sample(_resolve(schema["$ref"], root), rng, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(list(schema["enum"]))
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return _sample(schema[key][0], rng, root, depth + 1)
    if "allOf" in schema:
        if len(schema["allOf"]) != 1:
            raise UnsupportedSchema("allOf with more than one schema")
        return _sample(schema["allOf"][0], rng, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None and "properties" in schema:
        kind = "object"
    generate = _GENERATORS.get(kind)  # type: ignore[arg-type]
    if generate is None:
        raise UnsupportedSchema(f"cannot generate a value of type {kind!r}")
    return generate(schema, rng, root, depth)


def _resolve(ref: str, root: Mapping[str, Any]) -> Mapping[str, Any]:
    if not ref.startswith("#"):
        raise UnsupportedSchema(f"only local $refs are supported, not {ref!r}")
    node: Any = root
    for part in filter(None, ref[1:].split("/")):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or part not in node:
            raise UnsupportedSchema(f"unresolvable $ref {ref!r}")
        node = node[part]
    return node  # type: ignore[no-any-return]


def _bounds(schema: Mapping[str, Any]) -> tuple[float, float, bool, bool]:
    """(low, high, low excluded, high excluded); an open side spans DEFAULT_SPAN from the other or the example."""
    low_open, high_open = "exclusiveMinimum" in schema, "exclusiveMaximum" in schema
    low: float | None = schema.get("exclusiveMinimum" if low_open else "minimum")
    high: float | None = schema.get("exclusiveMaximum" if high_open else "maximum")
    examples = schema.get("examples") or [schema.get("example", 0)]
    centre = examples[0] if isinstance(examples[0], (int, float)) and not isinstance(examples[0], bool) else 0
    if low is None:
        low = (high if high is not None else centre + DEFAULT_SPAN / 2) - DEFAULT_SPAN
    if high is None:
        high = low + DEFAULT_SPAN
    if low > high:
        raise UnsupportedSchema(f"empty range [{low}, {high}]")
    return float(low), float(high), low_open, high_open


def _number(schema: Mapping[str, Any], rng: random.Random, _root: Mapping[str, Any], _depth: int) -> float:
    if "multipleOf" in schema:
        raise UnsupportedSchema("multipleOf on a number")
    low, high, low_open, high_open = _bounds(schema)
    for _ in range(100):
        value = round(rng.uniform(low, high), 3)
        if low <= value <= high and not (low_open and value == low) and not (high_open and value == high):
            return value
    raise UnsupportedSchema(f"no value found in ({low}, {high})")


def _integer(schema: Mapping[str, Any], rng: random.Random, _root: Mapping[str, Any], _depth: int) -> int:
    low, high, low_open, high_open = _bounds(schema)
    first = int(low) + 1 if low_open and low == int(low) else -int(-low // 1)  # ceil
    last = int(high) - 1 if high_open and high == int(high) else int(high // 1)  # floor
    step = int(schema.get("multipleOf", 1))
    first = -(-first // step) * step
    if first > last:
        raise UnsupportedSchema(f"no integer in [{low}, {high}] that is a multiple of {step}")
    return rng.randrange(first, last + 1, step)


def _string(schema: Mapping[str, Any], rng: random.Random, _root: Mapping[str, Any], _depth: int) -> str:
    if "pattern" in schema or "format" in schema:
        examples = schema.get("examples") or ([schema["example"]] if "example" in schema else [])
        if not examples:
            raise UnsupportedSchema("a string with a pattern or format needs an example")
        return str(rng.choice(examples))
    low = int(schema.get("minLength", 1))
    high = int(schema.get("maxLength", max(low, 12)))
    return "".join(rng.choices(string.ascii_letters, k=rng.randint(low, high)))


def _boolean(_schema: Mapping[str, Any], rng: random.Random, _root: Mapping[str, Any], _depth: int) -> bool:
    return rng.random() < 0.5


def _null(_schema: Mapping[str, Any], _rng: random.Random, _root: Mapping[str, Any], _depth: int) -> None:
    return None


def _array(schema: Mapping[str, Any], rng: random.Random, root: Mapping[str, Any], depth: int) -> list[Any]:
    low = int(schema.get("minItems", 1))
    count = rng.randint(low, int(schema.get("maxItems", max(low, 3))))
    items = schema.get("items", {})
    return [_sample(items, rng, root, depth + 1) for _ in range(count)]


def _object(schema: Mapping[str, Any], rng: random.Random, root: Mapping[str, Any], depth: int) -> dict[str, Any]:
    """Every declared property (optional ones too, so the model sees full rows)."""
    properties: Mapping[str, Any] = schema.get("properties", {})
    missing = set(schema.get("required", ())) - set(properties)
    if missing:
        raise UnsupportedSchema(f"required properties without a schema: {sorted(missing)}")
    return {name: _sample(sub, rng, root, depth + 1) for name, sub in properties.items()}


_GENERATORS = {
    "number": _number,
    "integer": _integer,
    "string": _string,
    "boolean": _boolean,
    "null": _null,
    "array": _array,
    "object": _object,
}


def generate_bodies(schema: Mapping[str, Any], count: int, seed: int = 0) -> list[bytes]:
    """`count` JSON request bodies drawn from `schema` with a seeded generator."""
    rng = random.Random(seed)
    return [json.dumps(sample(schema, rng), separators=(",", ":")).encode() for _ in range(count)]


def read_jsonl(path: Path) -> list[bytes]:
    """The request bodies in a JSONL file: one JSON value a line; blank lines are skipped.

    Raises:
        InputFileError: unreadable, empty, or a line is not JSON.
    """
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise InputFileError(f"{path}: {err.strerror}") from err
    bodies = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputFileError(f"{path}:{number}: not JSON: {err.msg}") from err
        bodies.append(json.dumps(value, separators=(",", ":")).encode())
    if not bodies:
        raise InputFileError(f"{path}: no inputs")
    return bodies
