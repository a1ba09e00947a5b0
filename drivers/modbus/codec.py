"""Pure conversions between Modbus registers and typed values, for every type and byte order.

This module owns the mapping of 16-bit register lists to int16/uint16/int32/uint32/int64/
uint64/float32/float64/string values and back (`decode`, `encode`), the byte orders
ABCD/CDAB/BADC/DCBA (plus the aliases "big" and "little"), and `register_count`. It does no
I/O and knows nothing about scaling, quality or tables; bool points come from coil/discrete
reads and need no conversion. Every (type, order) pair uses two precompiled `struct.Struct`s,
so `decode` costs one pack and one unpack in the poll loop.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

PointType = Literal[
    "bool", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string"
]
ByteOrder = Literal["ABCD", "CDAB", "BADC", "DCBA", "big", "little"]

_WIDTH: dict[str, int] = {
    "bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2,
    "int64": 4, "uint64": 4, "float64": 4,
}


def register_count(type_: str, length: int | None = None) -> int:
    """Registers (or bits, for bool on coil/discrete tables) one value of `type_` occupies."""
    if type_ == "string":
        if not length:
            raise ValueError("a string point needs `length` (registers)")
        return length
    return _WIDTH[type_]


# The trick: registers are packed as 16-bit words, big-endian (">") or little-endian ("<")
# within each word, then the bytes are read as the value, big- or little-endian:
#   ABCD: words ">", value ">"   (most significant word first, high byte first)
#   CDAB: words "<", value "<"   (least significant word first, high byte first in each word)
#   BADC: words "<", value ">"   (most significant word first, low byte first in each word)
#   DCBA: words ">", value "<"   (fully little-endian)
# For 64-bit types this is exactly the generalisation in `decode`'s docstring; for 16-bit
# types ABCD == CDAB and BADC == DCBA.
_ORDERS: dict[str, tuple[str, str]] = {
    "ABCD": (">", ">"), "CDAB": ("<", "<"), "BADC": ("<", ">"), "DCBA": (">", "<"),
}
_ALIASES: dict[str, str] = {"big": "ABCD", "little": "DCBA"}
_FORMATS: dict[str, str] = {
    "int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q",
    "float32": "f", "float64": "d",
}
_INT_RANGES: dict[str, tuple[int, int]] = {
    "int16": (-(1 << 15), (1 << 15) - 1), "uint16": (0, (1 << 16) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1), "uint32": (0, (1 << 32) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1), "uint64": (0, (1 << 64) - 1),
}

# (type, order) -> (number of registers, words struct, value struct); aliases included.
_CODECS: dict[tuple[str, str], tuple[int, struct.Struct, struct.Struct]] = {}
for _type, _fmt in _FORMATS.items():
    _n = _WIDTH[_type]
    for _order, (_wend, _vend) in _ORDERS.items():
        _CODECS[_type, _order] = (
            _n, struct.Struct(f"{_wend}{_n}H"), struct.Struct(f"{_vend}{_fmt}")
        )
for _alias, _order in _ALIASES.items():
    for _type in _FORMATS:
        _CODECS[_type, _alias] = _CODECS[_type, _order]


def _canonical_order(order: str) -> str:
    canonical = _ALIASES.get(order, order)
    if canonical not in _ORDERS:
        raise ValueError(f"unknown byte order {order!r} (ABCD, CDAB, BADC, DCBA, big, little)")
    return canonical


@lru_cache(maxsize=256)
def _string_struct(order: str, length: int) -> struct.Struct:
    """Words struct for a string of `length` registers: high byte first unless BADC/DCBA."""
    swapped = _canonical_order(order) in ("BADC", "DCBA")
    return struct.Struct(f"{'<' if swapped else '>'}{length}H")


def _string_length(length: int | None) -> int:
    if length is None or length < 1:
        raise ValueError("a string point needs `length` >= 1 (registers)")
    return length


def _bad_type(type_: str) -> ValueError:
    if type_ == "bool":
        return ValueError("bool points are read from coil/discrete tables; no codec needed")
    return ValueError(f"unknown point type {type_!r}")


def decode(
    registers: Sequence[int], type_: str, order: str = "ABCD", length: int | None = None
) -> int | float | str:
    """Decode the registers of one value, as read from the device, into a Python value.

    Byte orders, for a 32-bit value whose big-endian bytes are A B C D:

    - "ABCD": big-endian, most significant word first (the Modbus default).
    - "CDAB": words swapped: least significant word first, bytes big-endian within a word.
      Vendors often call this "little-endian word order" or "word swap": configure CDAB.
    - "BADC": bytes swapped within each word, words in big order ("byte swap").
    - "DCBA": fully little-endian.
    - Aliases: "big" means ABCD and "little" means DCBA (fully little-endian, *not* CDAB).

    64-bit types generalise this: ABCD is big-endian, CDAB reverses the order of the four
    words, BADC swaps the bytes in each word, DCBA is fully little-endian. 16-bit types have
    one word, so ABCD == CDAB and BADC == DCBA (the two bytes swapped).

    Strings occupy `length` registers, two bytes per register, high byte first for ABCD/CDAB
    and low byte first for BADC/DCBA; they are decoded as UTF-8 (errors replaced) and
    trailing NULs and spaces are stripped. NaN and infinities come back as floats: judging
    their quality is the driver's business.

    Raises ValueError for an unknown type or order, the wrong number of registers, or a
    register outside 0..65535.
    """
    codec = _CODECS.get((type_, order))
    if codec is None:
        if type_ != "string":
            if type_ in _FORMATS:
                _canonical_order(order)
            raise _bad_type(type_)
        n = _string_length(length)
        if len(registers) != n:
            raise ValueError(f"string of length {n} needs {n} registers, got {len(registers)}")
        try:
            raw = _string_struct(order, n).pack(*registers)
        except struct.error as exc:
            raise ValueError(f"register out of range 0..65535 in {list(registers)}") from exc
        return raw.decode("utf-8", errors="replace").rstrip("\x00 ")
    n, words, value = codec
    if len(registers) != n:
        raise ValueError(f"{type_} needs {n} registers, got {len(registers)}")
    try:
        result: int | float = value.unpack(words.pack(*registers))[0]
    except struct.error as exc:
        raise ValueError(f"register out of range 0..65535 in {list(registers)}") from exc
    return result


def encode(
    value: int | float | str, type_: str, order: str = "ABCD", length: int | None = None
) -> list[int]:
    """Encode one value into the registers a device would hold; the inverse of `decode`.

    Integers must fit the type (floats with an integral value are accepted); float32
    raises for finite values beyond its range (NaN and infinities encode as such). Strings
    are UTF-8, padded with NULs to `length` registers. Raises ValueError for out-of-range
    values, unknown types/orders or a string too long, TypeError for a value of the wrong kind.
    """
    codec = _CODECS.get((type_, order))
    if codec is None:
        if type_ != "string":
            if type_ in _FORMATS:
                _canonical_order(order)
            raise _bad_type(type_)
        if not isinstance(value, str):
            raise TypeError(f"a string point needs a str, got {type(value).__name__}")
        n = _string_length(length)
        raw = value.encode("utf-8")
        if len(raw) > 2 * n:
            raise ValueError(f"{value!r} needs {len(raw)} bytes; {n} registers hold {2 * n}")
        return list(_string_struct(order, n).unpack(raw.ljust(2 * n, b"\x00")))
    _n, words, packer = codec
    if isinstance(value, str):
        raise TypeError(f"a {type_} point needs a number, got a str")
    bounds = _INT_RANGES.get(type_)
    if bounds is not None:
        if isinstance(value, float):
            if not value.is_integer():
                raise ValueError(f"{value!r} is not an integer, cannot encode as {type_}")
            value = int(value)
        if not bounds[0] <= value <= bounds[1]:
            raise ValueError(f"{value} out of range {bounds[0]}..{bounds[1]} for {type_}")
    try:
        return list(words.unpack(packer.pack(value)))
    except (struct.error, OverflowError) as exc:
        raise ValueError(f"cannot encode {value!r} as {type_}: {exc}") from exc


_F32 = struct.Struct(">f")


def shortest_float32(x: float) -> float:
    """The shortest decimal that is the same float32 as `x` (7.122270107269287 -> 7.12227).

    A float32 register pair holds ~7 significant digits; printing its float64 expansion
    invents digits the device never sent. Non-finite values are returned unchanged.
    """
    if not math.isfinite(x):
        return x
    exact = _F32.pack(x)
    for digits in range(6, 10):
        candidate = float(f"{x:.{digits}g}")
        if _F32.pack(candidate) == exact:
            return candidate
    return x
