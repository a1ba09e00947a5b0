"""Pure conversions between Modbus registers and typed values, for every type and byte order.

(Work in progress by the codec helper: `register_count` is final; `decode` and `encode` follow.)
"""

from __future__ import annotations

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
