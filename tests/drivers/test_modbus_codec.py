"""Property and golden tests for drivers.modbus_codec: round trips, pymodbus agreement, errors."""

from __future__ import annotations

import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus.client import ModbusTcpClient

from drivers.modbus.codec import decode, encode, register_count

ORDERS = ["ABCD", "CDAB", "BADC", "DCBA", "big", "little"]
NUMERIC = ["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64"]
DT = ModbusTcpClient.DATATYPE
PYMODBUS_TYPE = {
    "int16": DT.INT16, "uint16": DT.UINT16, "int32": DT.INT32, "uint32": DT.UINT32,
    "int64": DT.INT64, "uint64": DT.UINT64, "float32": DT.FLOAT32, "float64": DT.FLOAT64,
}
BITS = {"int16": 16, "uint16": 16, "int32": 32, "uint32": 32, "int64": 64, "uint64": 64}


def values(type_: str) -> st.SearchStrategy[int | float]:
    if type_ == "float32":
        return st.floats(width=32)
    if type_ == "float64":
        return st.floats()
    bits = BITS[type_]
    if type_.startswith("u"):
        return st.integers(0, (1 << bits) - 1)
    return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def same(a: object, b: object, type_: str) -> bool:
    """Equality; floats compared bit for bit (so NaN payloads and -0.0 count)."""
    if type_.startswith("float"):
        fmt = ">f" if type_ == "float32" else ">d"
        assert isinstance(a, float) and isinstance(b, float)
        return struct.pack(fmt, a) == struct.pack(fmt, b)
    return a == b and type(a) is type(b)


def swap_bytes(regs: list[int]) -> list[int]:
    return [((r & 0xFF) << 8) | (r >> 8) for r in regs]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("type_", NUMERIC)
@settings(max_examples=50)  # x 48 cases; the pymodbus comparison below covers more values
@given(data=st.data())
def test_round_trip(type_: str, order: str, data: st.DataObject) -> None:
    v = data.draw(values(type_))
    regs = encode(v, type_, order)
    assert len(regs) == register_count(type_)
    assert all(0 <= r <= 0xFFFF for r in regs)
    assert same(decode(regs, type_, order), v, type_)


@pytest.mark.parametrize("type_", NUMERIC)
@given(data=st.data())
def test_decode_agrees_with_pymodbus(type_: str, data: st.DataObject) -> None:
    v = data.draw(values(type_))
    big = ModbusTcpClient.convert_to_registers(v, PYMODBUS_TYPE[type_], word_order="big")
    little = ModbusTcpClient.convert_to_registers(v, PYMODBUS_TYPE[type_], word_order="little")
    assert same(decode(big, type_, "ABCD"), v, type_)
    assert same(decode(little, type_, "CDAB"), v, type_)
    assert same(decode(swap_bytes(big), type_, "BADC"), v, type_)
    assert same(decode(swap_bytes(little), type_, "DCBA"), v, type_)
    assert encode(v, type_, "ABCD") == big
    assert encode(v, type_, "CDAB") == little


@pytest.mark.parametrize("order", ORDERS)
@given(text=st.text(st.characters(codec="utf-8"), max_size=12))
def test_string_round_trip(order: str, text: str) -> None:
    length = 8
    raw = text.encode("utf-8")
    if len(raw) > 2 * length:
        with pytest.raises(ValueError):
            encode(text, "string", order, length)
        return
    regs = encode(text, "string", order, length)
    assert len(regs) == length
    assert decode(regs, "string", order, length) == text.rstrip("\x00 ")


@given(text=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=10))
def test_string_agrees_with_pymodbus(text: str) -> None:
    regs = ModbusTcpClient.convert_to_registers(text, DT.STRING)
    regs += [0] * (5 - len(regs))
    assert decode(regs, "string", "ABCD", 5) == text
    assert decode(regs, "string", "CDAB", 5) == text
    assert decode(swap_bytes(regs), "string", "BADC", 5) == text
    assert decode(swap_bytes(regs), "string", "DCBA", 5) == text


GOLDEN: list[tuple[str, str, list[int], int | float | str]] = [
    # A vendor manual's float32 123.456 (0x42F6E979) in each documented order.
    ("float32", "ABCD", [0x42F6, 0xE979], struct.unpack(">f", bytes.fromhex("42F6E979"))[0]),
    ("float32", "CDAB", [0xE979, 0x42F6], struct.unpack(">f", bytes.fromhex("42F6E979"))[0]),
    ("float32", "BADC", [0xF642, 0x79E9], struct.unpack(">f", bytes.fromhex("42F6E979"))[0]),
    ("float32", "DCBA", [0x79E9, 0xF642], struct.unpack(">f", bytes.fromhex("42F6E979"))[0]),
    ("float32", "big", [0x42F6, 0xE979], struct.unpack(">f", bytes.fromhex("42F6E979"))[0]),
    ("float32", "little", [0x79E9, 0xF642], struct.unpack(">f", bytes.fromhex("42F6E979"))[0]),
    ("float32", "ABCD", [0x3F80, 0x0000], 1.0),
    ("int32", "ABCD", [0xFFFF, 0xFFFE], -2),
    ("int32", "CDAB", [0xFFFE, 0xFFFF], -2),
    ("int32", "BADC", [0xFFFF, 0xFEFF], -2),
    ("int32", "DCBA", [0xFEFF, 0xFFFF], -2),
    ("uint32", "ABCD", [0x0001, 0x86A0], 100_000),
    ("uint32", "CDAB", [0x86A0, 0x0001], 100_000),
    ("int16", "ABCD", [0xFF38], -200),
    ("int16", "CDAB", [0xFF38], -200),
    ("int16", "BADC", [0x38FF], -200),
    ("int16", "DCBA", [0x38FF], -200),
    ("uint16", "ABCD", [0x1234], 0x1234),
    ("uint16", "little", [0x3412], 0x1234),
    ("uint64", "ABCD", [0x0102, 0x0304, 0x0506, 0x0708], 0x0102030405060708),
    ("uint64", "CDAB", [0x0708, 0x0506, 0x0304, 0x0102], 0x0102030405060708),
    ("uint64", "BADC", [0x0201, 0x0403, 0x0605, 0x0807], 0x0102030405060708),
    ("uint64", "DCBA", [0x0807, 0x0605, 0x0403, 0x0201], 0x0102030405060708),
    ("int64", "ABCD", [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFF], -1),
    ("float64", "ABCD", [0x4000, 0x0000, 0x0000, 0x0000], 2.0),
    ("float64", "CDAB", [0x0000, 0x0000, 0x0000, 0x4000], 2.0),
    ("string", "ABCD", [0x5345, 0x4E53, 0x4F52, 0x2000], "SENSOR"),
    ("string", "CDAB", [0x5345, 0x4E53, 0x4F52, 0x2000], "SENSOR"),
    ("string", "BADC", [0x4553, 0x534E, 0x524F, 0x0020], "SENSOR"),
    ("string", "DCBA", [0x4553, 0x534E, 0x524F, 0x0020], "SENSOR"),
]


@pytest.mark.parametrize(("type_", "order", "regs", "value"), GOLDEN)
def test_golden(type_: str, order: str, regs: list[int], value: int | float | str) -> None:
    length = len(regs) if type_ == "string" else None
    assert decode(regs, type_, order, length) == value
    if type_ != "string":
        assert encode(value, type_, order, length) == regs


def test_golden_float_is_123_456() -> None:
    assert decode([0x42F6, 0xE979], "float32") == pytest.approx(123.456, abs=1e-5)
    assert encode(123.456, "float32", "CDAB") == [0xE979, 0x42F6]


def test_non_finite_floats_are_returned() -> None:
    assert math.isnan(float(decode([0x7FC0, 0x0000], "float32")))
    assert decode([0x7F80, 0x0000], "float32") == math.inf
    assert decode([0xFFF0, 0, 0, 0], "float64") == -math.inf


def test_string_decoding_is_lenient() -> None:
    assert decode([0x4142, 0xFF00], "string", length=2) == "AB\ufffd"
    assert decode([0, 0], "string", length=2) == ""


@pytest.mark.parametrize(
    ("regs", "type_", "length"),
    [
        ([1], "int32", None),
        ([1, 2, 3], "float32", None),
        ([], "uint16", None),
        ([1, 2], "uint16", None),
        ([1, 2, 3], "float64", None),
        ([1, 2], "string", 3),
        ([1], "string", None),
        ([1], "string", 0),
    ],
)
def test_wrong_register_count(regs: list[int], type_: str, length: int | None) -> None:
    with pytest.raises(ValueError):
        decode(regs, type_, "ABCD", length)


@pytest.mark.parametrize("regs", [[65536, 0], [-1, 0], [0, 70000]])
def test_register_out_of_range(regs: list[int]) -> None:
    with pytest.raises(ValueError):
        decode(regs, "uint32")
    with pytest.raises(ValueError):
        decode(regs, "string", length=2)


@pytest.mark.parametrize(
    ("value", "type_"),
    [
        (65536, "uint16"), (-1, "uint16"), (32768, "int16"), (-32769, "int16"),
        (1 << 32, "uint32"), (-(1 << 31) - 1, "int32"), (1 << 64, "uint64"),
        (1 << 63, "int64"), (1.5, "int32"), (1e39, "float32"), (10**400, "float64"),
    ],
)
def test_encode_out_of_range(value: int | float, type_: str) -> None:
    with pytest.raises(ValueError):
        encode(value, type_)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="byte order"):
        decode([0, 0], "float32", "BACD")
    with pytest.raises(ValueError, match="byte order"):
        encode(1, "int16", "middle")
    with pytest.raises(ValueError, match="point type"):
        decode([0], "int8")
    with pytest.raises(ValueError, match="coil"):
        decode([1], "bool")
    with pytest.raises(ValueError):
        encode("x" * 5, "string", length=2)
    with pytest.raises(TypeError):
        encode("1", "int16")
    with pytest.raises(TypeError):
        encode(1, "string", length=2)
    assert encode(7.0, "int16") == [7]


@given(st.floats(width=32))
def test_shortest_float32_is_the_same_float32(x: float) -> None:
    from drivers.modbus.codec import shortest_float32

    short = shortest_float32(x)
    if math.isnan(x):
        assert math.isnan(short)
    else:
        assert struct.pack(">f", short) == struct.pack(">f", x)
        assert len(repr(short)) <= len(repr(x))


def test_shortest_float32_drops_invented_digits() -> None:
    from drivers.modbus.codec import shortest_float32

    assert shortest_float32(struct.unpack(">f", struct.pack(">f", 7.12227))[0]) == 7.12227
    assert shortest_float32(struct.unpack(">f", struct.pack(">f", 0.42))[0]) == 0.42
