"""Durations and sizes with units, as field technicians write them in YAML.

`5s`, `500ms`, `2m`, `1h`, `7d` (a bare number means seconds); `512MB`, `2GiB`, `100kB`
(a bare number means bytes). Parsed into float seconds and int bytes; pydantic types
`Duration` and `ByteSize` carry the parsing and a JSON Schema that accepts both forms.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BeforeValidator, WithJsonSchema

_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE_UNITS = {
    "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_NUM_UNIT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration(value: Any) -> float:
    """`'5s'` -> 5.0; numbers are seconds. Raises ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 5s, 2m, 1h or 7d")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _NUM_UNIT.match(value)
        if m and m.group(2).lower() in _DURATION_UNITS:
            return float(m.group(1)) * _DURATION_UNITS[m.group(2).lower()]
        if m and m.group(2) == "":
            return float(m.group(1))
    raise ValueError(
        f"{value!r} is not a duration: write a number with a unit, e.g. 500ms, 5s, 2m, 1h, 7d"
    )


def parse_size(value: Any) -> int:
    """`'512MB'` -> 512000000; numbers are bytes. Raises ValueError with the accepted forms."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 512MB or 2GiB")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        m = _NUM_UNIT.match(value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
        if m and m.group(2) == "":
            return int(float(m.group(1)))
    raise ValueError(f"{value!r} is not a size: write a number with a unit, e.g. 512MB, 2GiB")


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\s*[0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d)?\s*$"},
            ],
            "description": "seconds, or a number with a unit: 500ms, 5s, 2m, 1h, 7d",
        }
    ),
]

ByteSize = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {
                    "type": "string",
                    "pattern": r"(?i)^\s*[0-9]+(\.[0-9]+)?\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?\s*$",
                },
            ],
            "description": "bytes, or a number with a unit: 100kB, 512MB, 2GiB",
        }
    ),
]
