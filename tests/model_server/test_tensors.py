"""The v2 tensor codec: JSON and raw little-endian tensors to rows, outputs to JSON or raw bytes."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from model_server.errors import InvalidInput
from model_server.modelcard import FieldSpec, ModelCard
from model_server.tensors import encode_raw, raw_tensor, requested_outputs, tensor, tensors_to_rows

CARD = ModelCard(
    name="mixed",
    version="1",
    flavor="python",
    entrypoint="m:M",
    inputs=[
        FieldSpec(name="age", type="integer"),
        FieldSpec(name="smoker", type="boolean"),
        FieldSpec(name="note", type="string"),
    ],
    outputs=[FieldSpec(name="price", type="number"), FieldSpec(name="label", type="string")],
)
NUMBERS = ModelCard(
    name="numbers", version="1", flavor="python", entrypoint="m:M",
    inputs=[FieldSpec(name="a", type="number"), FieldSpec(name="b", type="number")],
    outputs=[FieldSpec(name="y", type="number")],
)


def strings(*values: str) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


@pytest.mark.parametrize("datatype", ["FP16", "FP32", "FP64", "INT8", "INT32", "INT64", "UINT8", "UINT64"])
def test_an_n_by_f_raw_tensor_becomes_rows(datatype: str) -> None:
    values = np.array([[1, 2], [3, 4]], dtype=np.dtype(datatype.lower().replace("fp", "float")))
    rows = tensors_to_rows(NUMBERS, [raw_tensor("x", datatype, [2, 2], values.tobytes())])
    assert rows == [{"a": 1, "b": 2}, {"a": 3, "b": 4}]


def test_per_field_raw_tensors_decode_bool_int_and_utf8_bytes() -> None:
    tensors = [
        raw_tensor("age", "INT64", [2], np.array([40, 70], "<i8").tobytes()),
        raw_tensor("smoker", "BOOL", [2, 1], bytes([0, 1])),
        raw_tensor("note", "BYTES", [2], strings("crème", "")),
    ]
    assert tensors_to_rows(CARD, tensors) == [
        {"age": 40, "smoker": False, "note": "crème"},
        {"age": 70, "smoker": True, "note": ""},
    ]


def test_json_and_raw_tensors_mix_and_grpc_bytes_contents_are_utf8() -> None:
    tensors = [
        tensor("age", "INT32", [1], [40]),
        raw_tensor("smoker", "BOOL", [1], b"\x01"),
        tensor("note", "BYTES", [1], [b"ok"]),
    ]
    assert tensors_to_rows(CARD, tensors) == [{"age": 40, "smoker": True, "note": "ok"}]


@pytest.mark.parametrize(
    ("datatype", "shape", "raw", "message"),
    [
        ("FP64", [1, 2], b"\x00" * 15, "15 bytes are not 2 FP64 values of 8 bytes"),
        ("FP32", [1, 2], b"\x00" * 16, "16 bytes are not 2 FP32 values of 4 bytes"),
        ("BOOL", [2], b"\x00\x02", "BOOL bytes must be 0 or 1"),
        ("BYTES", [1], b"\x05\x00\x00\x00abc", "claims 5 bytes; 3 remain"),
        ("BYTES", [1], b"\x01\x00", "truncated length prefix"),
        ("BYTES", [1], b"\xff\xff\xff\xff", "claims 4294967295 bytes; 0 remain"),
        ("BYTES", [2], strings("a"), "holds 1 BYTES elements; the shape needs 2"),
        ("BYTES", [1], strings("a", "b"), "more than the shape's 1 BYTES elements"),
        ("BYTES", [1], b"\x01\x00\x00\x00\xff", "is not UTF-8"),
        ("FP8", [1], b"\x00", "unknown datatype 'FP8'"),
        ("FP64", [0], b"", "must be [N] or [N, F] with positive sizes"),
        ("FP64", [-1, 4], b"", "must be [N] or [N, F] with positive sizes"),
        ("FP64", [1, 1, 1], b"\x00" * 8, "must be [N] or [N, F]"),
        ("FP64", [2**40, 2**40], b"\x00" * 8, "8 bytes are not"),
    ],
)
def test_hostile_raw_tensors_are_invalid_input(datatype: str, shape: list[int], raw: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace("[", r"\[")):
        raw_tensor("t", datatype, shape, raw)


def test_a_json_tensor_whose_shape_does_not_match_its_values_is_invalid() -> None:
    with pytest.raises(InvalidInput, match=r"shape \[2, 2\] does not match 3 values"):
        tensor("x", "FP64", [2, 2], [[1.0, 2.0], [3.0]])


def test_a_datatype_that_does_not_fit_the_field_is_invalid() -> None:
    with pytest.raises(InvalidInput, match="datatype 'FP32' does not fit 'age'"):
        tensors_to_rows(CARD, [tensor("age", "FP32", [1], [1.0]), tensor("smoker", "BOOL", [1], [True]),
                               tensor("note", "BYTES", [1], ["x"])])


def test_json_values_must_hold_their_datatype() -> None:
    with pytest.raises(InvalidInput, match="'7' is not a FP64 value"):
        tensors_to_rows(NUMBERS, [tensor("x", "FP64", [1, 2], ["7", 1.0])])


def test_raw_outputs_are_little_endian_and_bytes_are_length_prefixed() -> None:
    assert encode_raw("FP64", [1.5, 2]) == struct.pack("<2d", 1.5, 2.0)
    assert encode_raw("INT64", [-1]) == struct.pack("<q", -1)
    assert encode_raw("BOOL", [True, False]) == b"\x01\x00"
    assert encode_raw("BYTES", ["setosa", "é"]) == strings("setosa", "é")
    assert raw_tensor("t", "BYTES", [2], encode_raw("BYTES", ["setosa", "é"])).data == ["setosa", "é"]


def test_requested_outputs_keep_the_request_order_and_refuse_unknown_names() -> None:
    assert [f.name for f in requested_outputs(CARD, ["label", "price"])] == ["label", "price"]
    assert [f.name for f in requested_outputs(CARD, None)] == ["price", "label"]
    with pytest.raises(InvalidInput, match=r"unknown outputs \['nope'\]"):
        requested_outputs(CARD, ["nope"])
