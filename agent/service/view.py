"""The read-only view of the running agent: all that health, metrics, systemd, the status file
and the status page may see of it.

This module owns `AgentView`, what those readers take instead of the runtime: who the gateway is
and where it sends (restart-only settings, fixed while the process runs), the queue's counters,
the uplink's state (`UplinkState`) and each device's (`DeviceState`). Every member is read live
when asked, from state the core already keeps: none touches a device, and only `queue_stats` asks
the queue (it may raise `QueueError`, as the queue does). Nothing here can change the agent.
`agent.service.runtime.Agent` implements it; the readers import this module, never the runtime,
so the service has no import circle, and a test may hand them any object with these members.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.polling.recent import DeviceRecent
from agent.queue.store import QueueStats


@dataclass(frozen=True, slots=True)
class UplinkState:
    """The MQTT side at one moment: the publisher's connection and the forwarder's progress."""

    connected: bool
    alive: bool  # the publisher's network thread runs (or was stopped on purpose)
    since_ms: int | None  # when the current (or last) connection was made
    last_error: str | None  # why the last connection attempt failed or dropped
    reconnects: int  # connections made after the first
    attempts: int  # connection attempts made
    last_ack_ms: int | None  # when the last telemetry PUBACK was processed
    published: int  # readings acknowledged by the broker since start
    loop_at: float  # time.monotonic() when the forwarder loop last went round
    delivery: str = "acknowledged"  # MQTT 3.1.1: unchecked, verified or dropping (delivery.py)


@dataclass(frozen=True, slots=True)
class DeviceState:
    """One device's runner at one moment (`agent.polling.runner.DeviceRunner`)."""

    name: str
    driver: str  # the driver's name in the config, e.g. modbus_tcp
    interval: float  # seconds between polls
    timeout: float  # the device's own answer timeout in seconds, 0 if its driver has none
    state: str  # online, offline or stale
    polls: int
    last_ok_ms: int | None
    last_error: str | None
    last_error_ms: int | None
    busy_since: float | None  # time.monotonic() when the poll in progress began, if one is
    beat_at: float  # time.monotonic() when the last poll finished
    recent: DeviceRecent  # last values, history and counters (copied under its own lock)


class AgentView(Protocol):
    """What the readers read of the running agent; each call reads the state of that moment."""

    @property
    def gateway(self) -> str: ...  # gateway.id
    @property
    def site(self) -> str | None: ...  # gateway.site
    @property
    def mqtt_host(self) -> str: ...
    @property
    def mqtt_port(self) -> int: ...
    @property
    def topic_prefix(self) -> str: ...
    @property
    def reconnect_min(self) -> float: ...  # seconds: the forwarder's retry delay
    @property
    def started_at(self) -> float: ...  # time.monotonic() when the agent was built
    @property
    def queue_path(self) -> Path: ...

    def queue_stats(self) -> QueueStats: ...

    def uplink(self) -> UplinkState: ...

    def publish_stats(self) -> dict[str, Any]: ...  # `agent.uplink.stats.PublishStats.counters`

    def devices(self) -> tuple[DeviceState, ...]: ...  # enabled devices, in config order
