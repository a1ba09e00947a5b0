"""Health: one snapshot of what the agent is doing, for the platform and for the technician.

`snapshot(agent)` reads only state the core already keeps (runners, queue counters, uplink,
clock) and never touches a device, so taking it cannot slow polling. The same dict is published
on `{prefix}/{gateway}/health` (schema: config/schemas/health.schema.json) and shown by
`edge-agent status`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.clock import current
from agent.contract import PAYLOAD_VERSION

if TYPE_CHECKING:
    from agent.runtime import Agent

_THERMAL = Path("/sys/class/thermal/thermal_zone0/temp")


def cpu_temp_c() -> float | None:
    """The SoC temperature where the board reports it (Raspberry Pi: thermal_zone0)."""
    try:
        return round(int(_THERMAL.read_text().strip()) / 1000, 1)
    except (OSError, ValueError):
        return None


def snapshot(agent: Agent) -> dict[str, Any]:
    clock = current()
    now = clock.now_ms()
    q = agent.queue.stats()
    up = agent.publisher
    try:
        disk_free = shutil.disk_usage(agent.queue.path.parent).free
    except OSError:
        disk_free = None
    return {
        "v": PAYLOAD_VERSION,
        "gateway": agent.config.gateway.id,
        "ts": now,
        "version": __version__,
        "uptime_s": round(time.monotonic() - agent.started_at, 1),
        "clock_synced": clock.synced(),
        "queue": {
            "depth": q.depth,
            "oldest_age_s": None if q.oldest_ts is None else round((now - q.oldest_ts) / 1000, 1),
            "bytes": q.bytes,
            "evicted": q.evicted,
            "dropped": q.dropped,
            "pending": q.pending,
            "moved_aside": list(q.moved_aside),
        },
        "uplink": {
            "connected": up.connected.is_set(),
            "since": up.connected_since_ms,
            "last_ack": agent.forwarder.last_ack_ms,
            "reconnects": up.reconnects,
            "last_error": up.last_error,
        },
        "published": agent.forwarder.published,
        "disk_free_bytes": disk_free,
        "cpu_temp_c": cpu_temp_c(),
        "devices": {
            r.name: {
                "state": r.state,
                "last_ok": r.last_ok_ms,
                "last_error": r.last_error,
                "last_error_ts": r.last_error_ms,
                "polls": r.polls,
            }
            for r in agent.runners
        },
    }
