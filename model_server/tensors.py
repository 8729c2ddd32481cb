"""Open Inference Protocol v2 tensors, protocol-neutral: rows from input tensors, output tensors from rows.

Tensors map to the model card's fields in one of two ways: one tensor per input field
(named after it, shape [N] or [N, 1]), or one tensor of shape [N, F] holding every field
in the card's order (what MLServer and KServe clients send for scikit-learn models).
Each tensor's `datatype` must be one the field's type accepts (`ACCEPTED`), and its data
must hold values of that datatype.

A tensor's data arrives as JSON values (REST's `data`, gRPC's typed `contents`) or as raw
bytes (REST's binary data extension, gRPC's `raw_input_contents`): little-endian values of
the datatype's size, and for BYTES each element as a 4-byte little-endian length and then
that many bytes. BYTES elements are UTF-8 strings here (the only field type taking BYTES
is `string`). Outputs encode the other way: JSON lists or raw bytes of the same layout.
Both REST (`routes/v2.py`) and gRPC (`grpc_server.py`) use this module; it knows no
protocol and raises only `InvalidInput`.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from model_server.errors import InvalidInput
from model_server.modelcard import FieldSpec, ModelCard

Row = dict[str, Any]
DATATYPES = {"number": "FP64", "integer": "INT64", "string": "BYTES", "boolean": "BOOL"}  # of outputs
_INTS = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")
ACCEPTED: dict[str, tuple[str, ...]] = {
    "number": ("FP16", "FP32", "FP64", *_INTS),
    "integer": _INTS,
    "string": ("BYTES",),
    "boolean": ("BOOL",),
}
# little-endian numpy dtypes of the fixed-size datatypes
NUMPY: dict[str, np.dtype[Any]] = {
    name: np.dtype(code)
    for name, code in {
        "BOOL": "?", "INT8": "i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
        "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
        "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
    }.items()
}
KNOWN = frozenset({*NUMPY, "BYTES"})
_LENGTH = struct.Struct("<I")


@dataclass
class Tensor:
    """One input tensor: `data` is flat, row-major, and holds `shape`'s product of values."""

    name: str
    datatype: str
    shape: list[int]
    data: list[Any]


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def _count(name: str, shape: Sequence[int]) -> int:
    if not 1 <= len(shape) <= 2 or any(dim < 1 for dim in shape):
        raise InvalidInput(f"tensor {name!r}: shape {list(shape)} must be [N] or [N, F] with positive sizes")
    count = 1
    for dim in shape:
        count *= dim
    return count


def _known(name: str, datatype: str) -> None:
    if datatype not in KNOWN:
        raise InvalidInput(f"tensor {name!r}: unknown datatype {datatype!r}; use one of {', '.join(sorted(KNOWN))}")


def tensor(name: str, datatype: str, shape: Sequence[int], data: list[Any]) -> Tensor:
    """A tensor of JSON values (nested lists are flattened).

    Raises:
        InvalidInput: an unknown datatype, or `shape` does not match the number of values.
    """
    _known(name, datatype)
    flat = _flatten(data)
    if len(flat) != _count(name, shape):
        raise InvalidInput(f"tensor {name!r}: shape {list(shape)} does not match {len(flat)} values")
    return Tensor(name, datatype, list(shape), flat)


def raw_tensor(name: str, datatype: str, shape: Sequence[int], raw: bytes | memoryview) -> Tensor:
    """A tensor decoded from raw little-endian bytes (BYTES: length-prefixed elements).

    Raises:
        InvalidInput: an unknown datatype, a byte count that is not the shape's values of
            that datatype, BOOL bytes other than 0 and 1, or BYTES elements whose lengths
            overrun the data or that are not UTF-8.
    """
    _known(name, datatype)
    count = _count(name, shape)
    if datatype == "BYTES":
        return Tensor(name, datatype, list(shape), _split_bytes(name, raw, count))
    dtype = NUMPY[datatype]
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(
            f"tensor {name!r}: {len(raw)} bytes are not {count} {datatype} values of {dtype.itemsize} bytes"
        )
    if datatype == "BOOL" and count and int(np.frombuffer(raw, dtype=np.uint8).max()) > 1:
        raise InvalidInput(f"tensor {name!r}: BOOL bytes must be 0 or 1")
    values: list[Any] = np.frombuffer(raw, dtype=dtype).tolist()
    return Tensor(name, datatype, list(shape), values)


def _split_bytes(name: str, raw: bytes | memoryview, count: int) -> list[str]:
    view = memoryview(raw)
    values: list[str] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise InvalidInput(f"tensor {name!r}: BYTES element {len(values)} has a truncated length prefix")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise InvalidInput(
                f"tensor {name!r}: BYTES element {len(values)} claims {length} bytes; {len(view) - offset} remain"
            )
        try:
            values.append(str(view[offset : offset + length], "utf-8"))
        except UnicodeDecodeError as err:
            raise InvalidInput(f"tensor {name!r}: BYTES element {len(values)} is not UTF-8") from err
        offset += length
        if len(values) > count:
            raise InvalidInput(f"tensor {name!r}: the data holds more than the shape's {count} BYTES elements")
    if len(values) != count:
        raise InvalidInput(f"tensor {name!r}: the data holds {len(values)} BYTES elements; the shape needs {count}")
    return values


def _holds(datatype: str, value: Any) -> bool:
    """Whether `value` is a value of the v2 `datatype`."""
    if datatype == "BOOL":
        return isinstance(value, bool)
    if datatype == "BYTES":
        return isinstance(value, str)
    if isinstance(value, bool):
        return False
    if isinstance(value, float):  # JSON does not tell 3.0 from 3
        return datatype.startswith("FP") or value.is_integer()
    return isinstance(value, int)


def _check_datatype(tensor: Tensor, fields: list[FieldSpec]) -> None:
    for spec in fields:
        if tensor.datatype not in ACCEPTED[spec.type]:
            raise InvalidInput(
                f"tensor {tensor.name!r}: datatype {tensor.datatype!r} does not fit {spec.name!r} ({spec.type}); "
                f"use one of {', '.join(ACCEPTED[spec.type])}"
            )
    if tensor.datatype == "BYTES":  # gRPC's bytes_contents
        tensor.data = [_utf8(tensor.name, v) if isinstance(v, bytes) else v for v in tensor.data]
    for value in tensor.data:
        if not _holds(tensor.datatype, value):
            raise InvalidInput(f"tensor {tensor.name!r}: {value!r} is not a {tensor.datatype} value")


def _utf8(name: str, value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidInput(f"tensor {name!r}: a BYTES element is not UTF-8") from err


def tensors_to_rows(card: ModelCard, inputs: list[Tensor]) -> list[Row]:
    """Input rows from v2 tensors (see the module docstring for the two layouts).

    Raises:
        InvalidInput: the tensors match neither layout, or a datatype does not fit its
            field or its data.
    """
    names = [f.name for f in card.inputs]
    by_name = {t.name: t for t in inputs}
    if set(by_name) == set(names) and len(inputs) == len(names):
        sizes = {t.shape[0] for t in inputs}
        if len(sizes) != 1 or any(len(t.shape) == 2 and t.shape[1] != 1 for t in inputs):
            raise InvalidInput("per-field tensors must all have shape [N] or [N, 1] with the same N")
        for spec in card.inputs:
            _check_datatype(by_name[spec.name], [spec])
        columns = [by_name[name].data for name in names]
        return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    if len(inputs) == 1 and len(inputs[0].shape) == 2 and inputs[0].shape[1] == len(names):
        _check_datatype(inputs[0], card.inputs)
        data = inputs[0].data
        width = len(names)
        return [dict(zip(names, data[i : i + width], strict=True)) for i in range(0, len(data), width)]
    raise InvalidInput(
        f"expected one tensor per input {names} or one tensor of shape [N, {len(names)}]; "
        f"got {[(t.name, t.shape) for t in inputs]}"
    )


def requested_outputs(card: ModelCard, names: list[str] | None) -> list[FieldSpec]:
    """The card's outputs a request asks for, in its order (all of them when `names` is None).

    Raises:
        InvalidInput: an output the model does not have.
    """
    if names is None:
        return list(card.outputs)
    by_name = {f.name: f for f in card.outputs}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise InvalidInput(f"unknown outputs {unknown}; the model has {sorted(by_name)}")
    return [by_name[name] for name in names]


def output_values(field: FieldSpec, rows: Sequence[Row]) -> list[Any]:
    """The column of `field` in the output rows (the data of its [N] tensor)."""
    return [row[field.name] for row in rows]


def encode_raw(datatype: str, values: list[Any]) -> bytes:
    """Raw little-endian bytes of `values` (BYTES: each UTF-8 string length-prefixed)."""
    if datatype == "BYTES":
        parts = [str(v).encode("utf-8") for v in values]
        return b"".join(_LENGTH.pack(len(p)) + p for p in parts)
    return np.asarray(values, dtype=NUMPY[datatype]).tobytes()
