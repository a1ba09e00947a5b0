"""Live reload: what applying a new, validated config to the running agent changes.

This module owns what a reload (SIGHUP, `systemctl reload edge-agent`) changes. `plan`, a pure
function, compares the running config with the new one: devices added, removed or changed (a
device on a bus whose settings changed counts as changed), buses whose ports must be reopened,
the log settings, and the keys that only a restart can apply (`gateway`, `mqtt`, `queue` and any
other section: the uplink and the queue stay exactly as they are across a reload, so queued
readings are neither lost nor sent twice). The runtime carries the `Plan` out in one method
(`agent.service.runtime.Agent.apply`): it stops the runners of removed and changed devices (a
poll in progress finishes and is queued), reopens changed buses, starts runners for added and
changed devices, and leaves every other device's runner - its connection, backoff and state -
untouched; `report` logs what it did. An invalid config is never applied: the caller keeps the
old one and logs why. `PendingLoad` reads the new config on its own thread, within
`RELOAD_DEADLINE`, so a reload can never hold up a stop or the watchdog.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from agent.config.load import AgentConfig, load
from agent.core import log
from agent.core.errors import ConfigError, ConfigIssue
from agent.transport.ports import BusConfig
from drivers.base import DeviceConfig

LIVE_SECTIONS = ("log", "buses", "devices", "devices_dir", "profiles_dir")
"""Top-level keys a reload applies; every other section (gateway, mqtt, queue, and any added
later) keeps its running values and is logged as needing a restart."""
LIVE_KEYS = ("gateway.clock",)
"""Keys inside those other sections that a reload does apply."""


def restart_sections() -> list[str]:
    return [k for k in AgentConfig.model_fields if k not in LIVE_SECTIONS]


def same(a: BaseModel | None, b: BaseModel | None) -> bool:
    """Equal values and the same keys written (a key set to its default can matter: a
    device's own `timeout` overrides its bus's)."""
    if a is None or b is None:
        return a is b
    return a == b and a.model_fields_set == b.model_fields_set


def changed_keys(a: Any, b: Any, prefix: str) -> list[str]:
    """Dotted keys whose values differ between two models (recursing into sub-models)."""
    if isinstance(a, BaseModel) and type(a) is type(b):
        return [k for name in type(a).model_fields
                for k in changed_keys(getattr(a, name), getattr(b, name), f"{prefix}.{name}")]
    return [] if a == b else [prefix]


@dataclass(frozen=True)
class Plan:
    """What a reload changes; `start` holds the configs of devices to (re)start, in order."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    start: tuple[DeviceConfig, ...] = ()
    buses_closed: tuple[str, ...] = ()
    buses_opened: tuple[BusConfig, ...] = ()
    restart_keys: tuple[str, ...] = ()
    log_changed: bool = False
    clock_changed: bool = False
    order: tuple[str, ...] = field(default=())  # enabled devices of the new config

    @property
    def stop(self) -> tuple[str, ...]:
        return self.removed + self.changed

    @property
    def noop(self) -> bool:
        return not (self.stop or self.start or self.buses_opened or self.buses_closed
                    or self.log_changed or self.clock_changed)


def plan(old: AgentConfig, new: AgentConfig) -> Plan:
    old_buses = {b.name: b for b in old.buses}
    new_buses = {b.name: b for b in new.buses}
    bus_changed = {n for n in old_buses.keys() | new_buses.keys()
                   if not same(old_buses.get(n), new_buses.get(n))}
    before = {d.name: d for d in old.devices if d.enabled}
    after = {d.name: d for d in new.devices if d.enabled}
    added = [n for n in after if n not in before]
    removed = [n for n in before if n not in after]
    changed = [n for n in after if n in before and (
        not same(before[n], after[n]) or getattr(after[n], "bus", None) in bus_changed)]
    restart = [k for s in restart_sections()
               for k in changed_keys(getattr(old, s), getattr(new, s), s) if k not in LIVE_KEYS]
    return Plan(
        added=tuple(added), removed=tuple(removed), changed=tuple(changed),
        unchanged=tuple(n for n in after if n not in added and n not in changed),
        start=tuple(after[n] for n in after if n in added or n in changed),
        buses_closed=tuple(sorted(n for n in bus_changed if n in old_buses)),
        buses_opened=tuple(new_buses[n] for n in sorted(bus_changed) if n in new_buses),
        restart_keys=tuple(restart), log_changed=not same(old.log, new.log),
        clock_changed=old.gateway.clock != new.gateway.clock, order=tuple(after))


def report(p: Plan, took_s: float) -> None:
    """Log what a reload did, once; and, if so, which keys still need a restart."""
    out = log.get("agent")
    out.info("config reloaded" if not p.noop else "config reloaded: nothing changed",
             added=list(p.added), removed=list(p.removed), changed=list(p.changed),
             unchanged=len(p.unchanged), buses_reopened=[b.name for b in p.buses_opened],
             took_ms=round(took_s * 1000, 1))
    if p.restart_keys:
        out.warning("restart needed to apply", keys=list(p.restart_keys),
                    hint="systemctl restart edge-agent; until then the agent runs the "
                    "previous values of these keys")


RELOAD_DEADLINE = 60.0
"""Seconds reading the config for a reload may take before the reload is refused (each file is
also bounded: `agent.config.yaml.MAX_FILE_BYTES`, `READ_DEADLINE`)."""


class PendingLoad:
    """The config read for a reload, on its own daemon thread: the main thread keeps answering
    signals and the watchdog meanwhile, and a read that never ends is abandoned at stop."""

    def __init__(self, path: str, deadline: float | None = None) -> None:
        self.path, self.started = path, time.monotonic()
        self.deadline = RELOAD_DEADLINE if deadline is None else deadline
        self._result: AgentConfig | ConfigError | None = None
        self._done = threading.Event()
        threading.Thread(target=self._read, name="config-reload", daemon=True).start()

    def _read(self) -> None:
        try:
            self._result = load(self.path).config
        except ConfigError as exc:
            self._result = exc
        except Exception as exc:  # a bug must not leave the reload pending for ever
            self._result = ConfigError([ConfigIssue(self.path, 1, 1, f"cannot read: {exc!r}")])
        self._done.set()

    def result(self) -> AgentConfig | ConfigError | None:
        """The new config or why it is refused; None while it is still being read."""
        if self._done.is_set():
            return self._result
        if time.monotonic() - self.started > self.deadline:
            return ConfigError([ConfigIssue(self.path, 1, 1, f"reading the config took longer "
                                            f"than {self.deadline:g} s; not applied")])
        return None
