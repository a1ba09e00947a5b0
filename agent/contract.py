"""The contract with the central platform: topics and payloads, versioned.

Topics: `{prefix}/{gateway}/{device}/telemetry` (batches of one device's readings) and
`{prefix}/{gateway}/status` (retained online/offline, also the Last Will). Payloads are JSON,
each with `"v": PAYLOAD_VERSION`; their JSON Schemas live in config/schemas/ and every test that
sees a published message validates it against them. Changing a field is a version bump.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from agent.model import QueuedReading

PAYLOAD_VERSION = 1


def telemetry_topic(prefix: str, gateway: str, device: str) -> str:
    return f"{prefix}/{gateway}/{device}/telemetry"


def status_topic(prefix: str, gateway: str) -> str:
    return f"{prefix}/{gateway}/status"


def encode_telemetry(gateway: str, device: str, batch: Sequence[QueuedReading],
                     historical: bool = False) -> bytes:
    """One device's readings, in seq order, as one telemetry message.

    `historical`: the readings were queued while the uplink was down (backlog), so they may
    arrive after newer live readings of the same device.
    """
    readings = []
    for q in batch:
        r = q.reading
        value, quality = r.value, r.quality
        if isinstance(value, float) and not math.isfinite(value):
            value, quality = None, "not_finite"  # JSON has no NaN/inf; say so instead
        readings.append({"seq": q.seq, "ts": r.ts, "metric": r.metric, "value": value,
                         "unit": r.unit, "quality": quality})
    body = {"v": PAYLOAD_VERSION, "gateway": gateway, "device": device,
            "historical": historical, "readings": readings}
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def encode_status(gateway: str, state: str, ts: int, version: str | None = None,
                  devices: Sequence[str] | None = None) -> bytes:
    """The retained status: `online` (birth, with version and devices) or `offline`."""
    body: dict[str, Any] = {"v": PAYLOAD_VERSION, "gateway": gateway, "state": state, "ts": ts}
    if version is not None:
        body["version"] = version
    if devices is not None:
        body["devices"] = list(devices)
    return json.dumps(body, separators=(",", ":")).encode()
