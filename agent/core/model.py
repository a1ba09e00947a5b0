"""The small frozen types at the centre of the agent.

`Reading` is what a driver produces and what the queue stores; `QueuedReading` is a reading
after the queue gave it its gateway-wide `seq`; `Row` is a queued reading as stored, as the
forwarder sends it, its fields named by the constants SEQ .. UNSYNCED. Besides
`agent.core.clock` (time comes from the agent's clock, which tests can make jump) this module
imports nothing else of ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from agent.core.clock import now_ms

Value = bool | int | float | str | None

GOOD: Final = "good"
"""Quality of a reading whose value was read and decoded as configured."""


__all__ = ["DEVICE", "GOOD", "METRIC", "QUALITY", "ROW_FIELDS", "SEQ", "TS", "UNIT", "UNSYNCED",
           "VALUE", "QueuedReading", "Reading", "Row", "Value", "now_ms"]


@dataclass(frozen=True, slots=True)
class Reading:
    """One value of one metric of one device at one instant.

    `quality` is "good" or a short snake_case word saying why not (e.g. "timeout",
    "illegal_address", "decode_error"); a reading that is not good carries `value=None`
    unless the driver could still say something useful.
    """

    device: str
    metric: str
    value: Value
    unit: str | None
    ts: int
    quality: str = GOOD


Row = tuple[int, str, str, str, str | None, int, str, str | None]
"""A queued reading as stored (the queue's `readings` columns, in order), for the forwarding
hot path: (seq, device, metric, value as JSON text, unit, ts, quality, unsynced: None or
"boot:offset" if the clock was not synced). Its fields are read by name, `row[SEQ]` with the
constants below, or by unpacking. It stays a plain tuple on purpose: a NamedTuple (a tuple
subclass) slowed the drain measurably, because CPython's garbage collector never untracks
tuple subclasses and its bytecode specializes unpacking and indexing only for exact tuples
(README, Performance)."""

SEQ: Final = 0
DEVICE: Final = 1
METRIC: Final = 2
VALUE: Final = 3  # the value as JSON text, exactly as stored and sent
UNIT: Final = 4
TS: Final = 5
QUALITY: Final = 6
UNSYNCED: Final = 7
ROW_FIELDS: Final = ("seq", "device", "metric", "value", "unit", "ts", "quality", "unsynced")
"""The names of Row's fields, in order (the constants above index them)."""


@dataclass(frozen=True, slots=True)
class QueuedReading:
    """A reading as stored in the queue: `seq` grows by one per reading per gateway, forever."""

    seq: int
    reading: Reading
