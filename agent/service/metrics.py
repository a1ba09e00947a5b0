"""`/metrics`: the agent's counters in the Prometheus text exposition format (0.0.4), by hand.

Everything comes from state the core already keeps (`agent.service.view`): the health snapshot
(queue, uplink, clock, disk), each device's `DeviceRecent` counters (polls, readings by quality,
poll errors by kind, readings queued, Modbus requests) and the forwarder's `PublishStats`
(readings acknowledged per device, publish->PUBACK latency histogram). Counters restart at zero
with the agent, except the queue's evicted, dropped and lost totals, which the queue keeps across
restarts.
Writing the format directly (about 80 lines) is smaller than depending on prometheus_client; the
tests parse the output with prometheus_client's parser.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from agent.service.view import AgentView
from agent.uplink.stats import LATENCY_BUCKETS

Sample = tuple[dict[str, str], float | int | None]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float | int) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return repr(value) if isinstance(value, float) else str(value)


class Exposition:
    """Builds the text: one HELP/TYPE header per family, then its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        self.samples(name, samples)

    def samples(self, name: str, samples: Iterable[Sample]) -> None:
        for labels, value in samples:
            if value is None:
                continue
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{text}}} {_number(value)}" if text
                              else f"{name} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(view: AgentView, snap: dict[str, Any]) -> str:
    """The exposition for the agent `view` shows, given its current health snapshot `snap`."""
    out = Exposition()
    q, up = snap["queue"], snap["uplink"]
    out.family("edge_agent_info", "gauge", "Agent version and gateway id.",
               [({"version": snap["version"], "gateway": snap["gateway"]}, 1)])
    out.family("edge_agent_uptime_seconds", "gauge", "Seconds since the agent started.",
               [({}, snap["uptime_s"])])
    out.family("edge_agent_clock_synced", "gauge", "1 when NTP has synchronized the clock.",
               [({}, snap["clock_synced"])])
    out.family("edge_agent_disk_free_bytes", "gauge", "Free bytes on the queue's filesystem.",
               [({}, snap["disk_free_bytes"])])
    out.family("edge_agent_cpu_temperature_celsius", "gauge", "SoC temperature.",
               [({}, snap["cpu_temp_c"])])

    counters = {d.name: d.recent.counters() for d in view.devices()}
    states = {name: d["state"] for name, d in snap["devices"].items()}
    out.family("edge_agent_device_up", "gauge", "1 when the device answered its last poll.",
               [({"device": n}, int(s == "online")) for n, s in states.items()])
    out.family("edge_agent_device_state", "gauge", "The device's state (online, offline, "
               "stale) as a label.",
               [({"device": n, "state": s}, 1) for n, s in states.items()])
    out.family("edge_agent_polls_total", "counter", "Polls made.",
               [({"device": n}, c["polls"]) for n, c in counters.items()])
    out.family("edge_agent_readings_polled_total", "counter", "Readings polled, by quality.",
               [({"device": n, "quality": k}, v) for n, c in counters.items()
                for k, v in sorted(c["by_quality"].items())])
    out.family("edge_agent_poll_errors_total", "counter", "Failed polls, by kind.",
               [({"device": n, "kind": k}, v) for n, c in counters.items()
                for k, v in sorted(c["errors"].items())])
    out.family("edge_agent_readings_queued_total", "counter", "Readings written to the queue "
               "(after deadband/on_change).",
               [({"device": n}, c["queued"]) for n, c in counters.items()])
    pub = view.publish_stats()
    out.family("edge_agent_readings_published_total", "counter", "Readings the broker "
               "acknowledged.", [({"device": n}, pub["published"].get(n, 0)) for n in counters])
    out.family("edge_agent_modbus_requests_total", "counter", "Modbus requests sent.",
               [({"device": n}, c["requests"]) for n, c in counters.items()])
    out.family("edge_agent_modbus_requests_per_poll", "gauge", "Modbus requests the last poll "
               "needed.", [({"device": n}, c["requests_last_poll"]) for n, c in counters.items()])

    out.family("edge_agent_queue_depth", "gauge", "Readings waiting for a PUBACK.",
               [({}, q["depth"])])
    out.family("edge_agent_queue_bytes", "gauge", "Bytes the queued readings use.",
               [({}, q["bytes"])])
    out.family("edge_agent_queue_oldest_age_seconds", "gauge", "Age of the oldest queued "
               "reading.", [({}, q["oldest_age_s"])])
    out.family("edge_agent_queue_pending", "gauge", "Readings held in memory for the database.",
               [({}, q["pending"])])
    out.family("edge_agent_queue_evicted_total", "counter", "Readings evicted unsent at a "
               "bound, since the queue was created.", [({}, q["evicted"])])
    out.family("edge_agent_queue_dropped_total", "counter", "Readings never written.",
               [({}, q["dropped"])])
    out.family("edge_agent_queue_lost_total", "counter", "Committed readings gone with the "
               "queue file's past (its WAL removed, an older copy restored), since the queue "
               "was created.", [({}, q["lost"])])

    out.family("edge_agent_uplink_connected", "gauge", "1 while connected to the broker.",
               [({}, up["connected"])])
    out.family("edge_agent_uplink_broker_dropping", "gauge", "1 while the broker acknowledges "
               "but does not deliver this gateway's messages (MQTT 3.1.1, see delivery).",
               [({}, int(view.uplink().delivery == "dropping"))])
    out.family("edge_agent_uplink_reconnects_total", "counter", "Connections made after the "
               "first.", [({}, up["reconnects"])])
    out.family("edge_agent_uplink_connect_attempts_total", "counter", "Connection attempts.",
               [({}, view.uplink().attempts)])
    out.family("edge_agent_uplink_last_ack_timestamp_seconds", "gauge", "When the last "
               "telemetry PUBACK was processed.",
               [({}, None if up["last_ack"] is None else up["last_ack"] / 1000)])
    out.family("edge_agent_messages_refused_total", "counter", "Telemetry messages the broker "
               "refused.", [({}, pub["refused"])])
    out.family("edge_agent_publish_latency_seconds", "histogram", "Publish to PUBACK, per "
               "telemetry message.", [])
    cumulative, buckets = 0, []
    for bound, n in zip((*map(repr, LATENCY_BUCKETS), "+Inf"), pub["buckets"], strict=True):
        cumulative += n
        buckets.append(({"le": bound}, cumulative))
    out.samples("edge_agent_publish_latency_seconds_bucket", buckets)
    out.samples("edge_agent_publish_latency_seconds_sum", [({}, pub["sum"])])
    out.samples("edge_agent_publish_latency_seconds_count", [({}, pub["count"])])
    return out.text()
