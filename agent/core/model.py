"""The small frozen types at the centre of the agent.

`Reading` is what a driver produces and what the queue stores; `QueuedReading` is a reading
after the queue gave it its gateway-wide `seq`. Besides `agent.core.clock` (time comes from the
agent's clock, which tests can make jump) this module imports nothing else of ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from agent.core.clock import now_ms

Value = bool | int | float | str | None

GOOD: Final = "good"
"""Quality of a reading whose value was read and decoded as configured."""


__all__ = ["GOOD", "QueuedReading", "Reading", "Row", "Value", "now_ms"]


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
"""A queued reading as stored, for the forwarding hot path: (seq, device, metric, value as
JSON text, unit, ts, quality, unsynced: None or "boot:offset" if the clock was not synced)."""


@dataclass(frozen=True, slots=True)
class QueuedReading:
    """A reading as stored in the queue: `seq` grows by one per reading per gateway, forever."""

    seq: int
    reading: Reading
