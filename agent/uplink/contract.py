"""The contract with the central platform: topics and payloads, versioned.

Topics: `{prefix}/{gateway}/{device}/telemetry` (batches of one device's readings) and
`{prefix}/{gateway}/status` (retained online/offline, also the Last Will). Payloads are JSON,
each with `"v": PAYLOAD_VERSION`; their JSON Schemas live in config/schemas/ and every test that
sees a published message validates it against them. Changing a field is a version bump.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from agent.core.model import Row

PAYLOAD_VERSION = 1


def telemetry_topic(prefix: str, gateway: str, device: str) -> str:
    return f"{prefix}/{gateway}/{device}/telemetry"


def status_topic(prefix: str, gateway: str) -> str:
    return f"{prefix}/{gateway}/status"


def health_topic(prefix: str, gateway: str) -> str:
    return f"{prefix}/{gateway}/health"


@lru_cache(maxsize=4096)
def _jstr(text: str | None) -> str:
    """JSON for a string or null; names, units and qualities repeat, so this is cached."""
    return json.dumps(text)


def encode_telemetry(gateway: str, device: str, rows: Sequence[Row], historical: bool = False,
                     fix: Callable[[int, str], tuple[int, str]] | None = None) -> bytes:
    """One device's queued rows, in seq order, as one telemetry message.

    Built by string assembly from the JSON the queue already stores for each value (the queue
    stores only finite numbers: see agent.queue.schema.as_stored), which keeps the hot path
    free of per-reading dicts. `historical`: the readings were queued while the uplink was
    down (backlog), so they may arrive after newer live readings of the same device. A reading
    stamped while the clock was not synchronized carries `"clock": "unsynced"`, or
    `"corrected"` with its time fixed by `fix` (see agent.core.clock.corrector).
    """
    readings = ",".join(
        f'{{"seq":{seq},"ts":{ts},"metric":{_jstr(metric)},"value":{value},'
        f'"unit":{_jstr(unit)},"quality":{_jstr(quality)}}}' if tag is None else
        _unsynced(seq, metric, value, unit, ts, quality, tag, fix)
        for seq, _, metric, value, unit, ts, quality, tag in rows
    )
    return (f'{{"v":{PAYLOAD_VERSION},"gateway":{_jstr(gateway)},"device":{_jstr(device)},'
            f'"historical":{"true" if historical else "false"},"readings":[{readings}]}}'
            ).encode()


def _unsynced(seq: int, metric: str, value: str, unit: str | None, ts: int, quality: str,
              tag: str, fix: Callable[[int, str], tuple[int, str]] | None) -> str:
    ts, label = fix(ts, tag) if fix is not None else (ts, "unsynced")
    return (f'{{"seq":{seq},"ts":{ts},"metric":{_jstr(metric)},"value":{value},'
            f'"unit":{_jstr(unit)},"quality":{_jstr(quality)},"clock":"{label}"}}')


def encode_senml(gateway: str, device: str, rows: Sequence[Row], historical: bool = False,
                 fix: Callable[[int, str], tuple[int, str]] | None = None) -> bytes:
    """The same readings as a SenML pack (RFC 8428, JSON): base name `gateway:device:`, base
    time of the first reading in seconds, `v`/`vb`/`vs` by type. Extension labels, which SenML
    receivers ignore unless they know them: `seq`, `quality` (when not good), `clock` (when not
    synchronized) and `historical` (when true). SenML has no way to say "no value", so readings
    without one (failed polls) are left out; the health topic says why a device is silent.
    """
    records: list[dict[str, Any]] = []
    base: int | None = None
    for seq, _, metric, value_json, unit, ts, quality, tag in rows:
        value = json.loads(value_json)
        if value is None:
            continue
        label = None
        if tag is not None:
            ts, label = fix(ts, tag) if fix is not None else (ts, "unsynced")
        rec: dict[str, Any] = {}
        if base is None:
            base = ts
            rec.update(bn=f"{gateway}:{device}:", bt=ts / 1000)
        rec["n"] = metric
        if unit:
            rec["u"] = unit
        key = "vb" if isinstance(value, bool) else "vs" if isinstance(value, str) else "v"
        rec[key] = value
        if ts != base:
            rec["t"] = (ts - base) / 1000
        rec["seq"] = seq
        if quality != "good":
            rec["quality"] = quality
        if label:
            rec["clock"] = label
        if historical:
            rec["historical"] = True
        records.append(rec)
    return json.dumps(records, separators=(",", ":")).encode()


def encode_status(gateway: str, state: str, ts: int, version: str | None = None,
                  devices: Sequence[str] | None = None) -> bytes:
    """The retained status: `online` (birth, with version and devices) or `offline`."""
    body: dict[str, Any] = {"v": PAYLOAD_VERSION, "gateway": gateway, "state": state, "ts": ts}
    if version is not None:
        body["version"] = version
    if devices is not None:
        body["devices"] = list(devices)
    return json.dumps(body, separators=(",", ":")).encode()
