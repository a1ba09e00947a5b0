"""Health: one snapshot of what the agent is doing, for the platform and for the technician.

`snapshot(view)` reads only state the core already keeps (devices, queue counters, uplink,
clock: `agent.service.view`) and never touches a device, so taking it cannot slow polling. The
same dict is published on `{prefix}/{gateway}/health` (schema:
config/schemas/health.schema.json) and shown by `edge-agent status`.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from agent import __version__
from agent.core import log
from agent.core.clock import current
from agent.core.errors import AgentError
from agent.service.view import AgentView
from agent.uplink.contract import PAYLOAD_VERSION, health_topic
from agent.uplink.publisher import Publisher

_THERMAL = Path("/sys/class/thermal/thermal_zone0/temp")


def cpu_temp_c() -> float | None:
    """The SoC temperature where the board reports it (Raspberry Pi: thermal_zone0)."""
    try:
        return round(int(_THERMAL.read_text().strip()) / 1000, 1)
    except (OSError, ValueError):
        return None


def snapshot(view: AgentView) -> dict[str, Any]:
    clock = current()
    now = clock.now_ms()
    q = view.queue_stats()
    up = view.uplink()
    try:
        disk_free = shutil.disk_usage(view.queue_path.parent).free
    except OSError:
        disk_free = None
    return {
        "v": PAYLOAD_VERSION,
        "gateway": view.gateway,
        "ts": now,
        "version": __version__,
        "uptime_s": round(time.monotonic() - view.started_at, 1),
        "clock_synced": clock.synced(),
        "queue": {
            "depth": q.depth,
            "oldest_age_s": None if q.oldest_ts is None else round((now - q.oldest_ts) / 1000, 1),
            "bytes": q.bytes,
            "evicted": q.evicted,
            "dropped": q.dropped,
            "lost": q.lost,
            "pending": q.pending,
            "moved_aside": list(q.moved_aside),
        },
        "uplink": {
            "connected": up.connected,
            "since": up.since_ms,
            "last_ack": up.last_ack_ms,
            "reconnects": up.reconnects,
            "last_error": up.last_error,
            "delivery": up.delivery,
        },
        "published": up.published,
        "disk_free_bytes": disk_free,
        "cpu_temp_c": cpu_temp_c(),
        "devices": {
            d.name: {
                "state": d.state,
                "last_ok": d.last_ok_ms,
                "last_error": d.last_error,
                "last_error_ts": d.last_error_ms,
                "polls": d.polls,
            }
            for d in view.devices()
        },
    }


class HealthReporter:
    """Publishes the snapshot of `view` (QoS 1, retained) through `publisher` every `interval` s
    while the uplink is up.

    Nothing is queued for health while offline: the next message after reconnect says it all.
    """

    def __init__(self, view: AgentView, publisher: Publisher, interval: float) -> None:
        self._view = view
        self._publisher = publisher
        self._interval = interval
        self._topic = health_topic(view.topic_prefix, view.gateway)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = log.get("health")
        self.sent = 0

    def start(self) -> None:
        if self._interval > 0:
            self._thread = threading.Thread(target=self._run, name="health", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def final(self) -> None:
        """At a clean stop, while still connected: one last retained health saying the uplink is
        going down, so the platform does not read `connected: true` from a stopped gateway.
        (After a crash the retained status, the Last Will, says `offline`.)"""
        if self._interval <= 0 or not self._publisher.connected.is_set():
            return
        try:
            doc = snapshot(self._view)
            doc["uplink"] |= {"connected": False, "last_error": "agent stopped"}
            body = json.dumps(doc, separators=(",", ":")).encode()
            self._publisher.publish(self._topic, body, qos=1, retain=True)
            self.sent += 1
        except (AgentError, OSError) as exc:
            self._log.warning("health not published", error=str(exc))

    def _run(self) -> None:
        uplink = self._publisher
        while not self._stop.is_set():
            if not uplink.connected.wait(0.5):
                continue
            try:
                body = json.dumps(snapshot(self._view), separators=(",", ":")).encode()
                uplink.publish(self._topic, body, qos=1, retain=True)
                self.sent += 1
            except (AgentError, OSError) as exc:
                self._log.warning("health not published", error=str(exc))
            self._stop.wait(self._interval)
