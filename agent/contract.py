"""The contract with the central platform: topics and payloads, versioned.

Topics: `{prefix}/{gateway}/{device}/telemetry` (batches of one device's readings) and
`{prefix}/{gateway}/status` (retained online/offline, also the Last Will). Payloads are JSON,
each with `"v": PAYLOAD_VERSION`; their JSON Schemas live in config/schemas/ and every test that
sees a published message validates it against them. Changing a field is a version bump.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from agent.model import Row

PAYLOAD_VERSION = 1


def telemetry_topic(prefix: str, gateway: str, device: str) -> str:
    return f"{prefix}/{gateway}/{device}/telemetry"


def status_topic(prefix: str, gateway: str) -> str:
    return f"{prefix}/{gateway}/status"


@lru_cache(maxsize=4096)
def _jstr(text: str | None) -> str:
    """JSON for a string or null; names, units and qualities repeat, so this is cached."""
    return json.dumps(text)


def encode_telemetry(gateway: str, device: str, rows: Sequence[Row],
                     historical: bool = False) -> bytes:
    """One device's queued rows, in seq order, as one telemetry message.

    Built by string assembly from the JSON the queue already stores for each value (the queue
    stores only finite numbers: see Queue.put), which keeps the hot path free of per-reading
    dicts. `historical`: the readings were queued while the uplink was down (backlog), so they
    may arrive after newer live readings of the same device.
    """
    readings = ",".join(
        f'{{"seq":{seq},"ts":{ts},"metric":{_jstr(metric)},"value":{value},'
        f'"unit":{_jstr(unit)},"quality":{_jstr(quality)}}}'
        for seq, _, metric, value, unit, ts, quality in rows
    )
    return (f'{{"v":{PAYLOAD_VERSION},"gateway":{_jstr(gateway)},"device":{_jstr(device)},'
            f'"historical":{"true" if historical else "false"},"readings":[{readings}]}}'
            ).encode()


def encode_status(gateway: str, state: str, ts: int, version: str | None = None,
                  devices: Sequence[str] | None = None) -> bytes:
    """The retained status: `online` (birth, with version and devices) or `offline`."""
    body: dict[str, Any] = {"v": PAYLOAD_VERSION, "gateway": gateway, "state": state, "ts": ts}
    if version is not None:
        body["version"] = version
    if devices is not None:
        body["devices"] = list(devices)
    return json.dumps(body, separators=(",", ":")).encode()
