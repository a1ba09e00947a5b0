"""The fault schedule: one fault at a time, random but seeded, each followed by a recovery check.

A fault starts, lasts a random while, ends (the harness puts the world back), and then the
harness waits until every device has a fresh good reading delivered end to end: polled after
the fault ended and received by the subscriber. That wait is the fault's recovery time. Kinds:

  broker_kill     broker SIGSTOPped (PUBACKs stop), then SIGKILLed and restarted
  broker_restart  broker stopped cleanly and restarted
  broker_pause    broker SIGSTOPped then SIGCONTed: the connection hangs instead of dropping
  agent_kill      the agent kill -9ed and restarted under its CLI
  modbus_kill     the Modbus TCP server stopped, then back on the same port
  serial_vanish   the text sensor's port disappears (hang-up, path gone) and returns on a new pty
  garbage         the RTU unit answers damaged frames (bad CRC), the text sensor answers junk
  disk_full       the queue's filesystem (a real tmpfs) kept full (what the queue frees is
                  taken again), then freed
  reload_valid    a changed valid config, SIGHUP
  reload_invalid  a broken config, SIGHUP (refused, the agent goes on), then the file restored
  net_cut         the proxy between agent and broker black-holes traffic for longer than keepalive
  acl_deny        the broker's ACL stops allowing the gateway's telemetry (status and health
                  still pass), then is fixed: SIGHUP both times
  packet_limit    the broker restarted with max_packet_size 1500, below the agent's batches,
                  then restarted without
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.chaos.world import DENY_TELEMETRY_ACL, DEVICES, OPEN_ACL, World
from tests.support import wait_until

KINDS = ("broker_kill", "broker_restart", "broker_pause", "agent_kill", "modbus_kill",
         "serial_vanish", "garbage", "disk_full", "reload_valid", "reload_invalid", "net_cut",
         "acl_deny", "packet_limit")


class ChaosError(RuntimeError):
    """The world did not do what the harness asked within its timeout."""


def poll(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll until `predicate()` is truthy, else ChaosError (no sleep is synchronization)."""
    wait_until(predicate, timeout, 0.02, what, error=ChaosError)


@dataclass(frozen=True)
class Profile:
    name: str
    faults: int  # at least this many
    minutes: float  # and at least this long
    hold: tuple[float, float]  # how long a fault lasts (net_cut: at least keepalive + 1 s)
    gap: tuple[float, float]  # quiet time between faults
    every_kind_once: bool  # short: each kind exactly once, in a seeded order
    kinds: tuple[str, ...] = KINDS


SHORT = Profile("short", 0, 0.0, (0.5, 2.0), (0.2, 1.0), True)
LONG = Profile("long", 100, 30.0, (0.5, 6.0), (0.5, 5.0), False)


@dataclass
class Fault:
    kind: str
    started: float
    ended: float = 0.0
    recovered: float | None = None
    note: str = ""

    @property
    def recovery(self) -> float | None:
        return None if self.recovered is None else self.recovered - self.ended


@dataclass
class Schedule:
    world: World
    disk: Path  # the tmpfs holding the queue
    profile: Profile
    rng: random.Random
    faults: list[Fault] = field(default_factory=list)
    log: Callable[[str], None] = print
    _scan: int = 0

    def kinds(self) -> list[str]:
        if self.profile.every_kind_once:
            order = list(self.profile.kinds)
            self.rng.shuffle(order)
            return order
        return [self.rng.choice(self.profile.kinds) for _ in range(self.profile.faults * 3)]

    def run(self) -> None:
        began = time.monotonic()
        for kind in self.kinds():
            enough = (len(self.faults) >= self.profile.faults
                      and time.monotonic() - began >= self.profile.minutes * 60)
            if enough and not self.profile.every_kind_once:
                break
            self.inject(kind)
            time.sleep(self.rng.uniform(*self.profile.gap))  # pacing, not synchronization

    def inject(self, kind: str) -> None:
        hold = self.rng.uniform(*self.profile.hold)
        fault = Fault(kind, time.monotonic())
        self.faults.append(fault)
        fault.note = getattr(self, f"_{kind}")(hold) or ""
        fault.ended = time.monotonic()
        self._scan = self.world.collector.count()
        self.recover(fault)
        rec = "-" if fault.recovery is None else f"{fault.recovery:.2f}s"
        self.log(f"fault {len(self.faults):3d} {kind:15s} held {fault.ended - fault.started:5.2f}s"
                 f" recovered in {rec} {fault.note}")

    def recover(self, fault: Fault, timeout: float = 90.0) -> None:
        """Wait for a fresh good reading from every device: polled after the fault ended."""
        fresh: set[str] = set()

        def check() -> bool:
            for _, body in self.world.collector.stamped(self._scan):
                device = body["device"]
                if device in fresh:
                    continue
                served = self.world.served[device].times
                if any(r["metric"] == "n" and r["quality"] == "good"
                       and served.get(int(r["value"]), 0.0) > fault.ended
                       for r in body["readings"]):
                    fresh.add(device)
            return fresh >= set(DEVICES)

        with contextlib.suppress(ChaosError):
            poll(check, timeout, f"recovery after {fault.kind}")
            fault.recovered = time.monotonic()
        if fault.recovered is None:
            fault.note += f" NOT RECOVERED (fresh from {sorted(fresh)} only)"

    # the faults ----------------------------------------------------------------------------
    def _broker_back(self) -> None:
        w = self.world
        w.broker.start()
        w.collector.wait_subscribed(30)
        w.proxy.release()

    def _broker_kill(self, hold: float) -> str:
        w = self.world
        w.proxy.hold()  # the subscriber resubscribes first when it is back
        w.broker.pause()
        time.sleep(hold)  # the fault's own length
        w.broker.kill()
        self._broker_back()
        return ""

    def _broker_restart(self, hold: float) -> str:
        self.world.proxy.hold()
        self.world.broker.stop()
        time.sleep(hold)
        self._broker_back()
        return ""

    def _broker_pause(self, hold: float) -> str:
        self.world.broker.pause()
        time.sleep(hold * 1.5)
        self.world.broker.resume()
        return ""

    def _agent_kill(self, hold: float) -> str:
        w = self.world
        target = w.next_seq() + self.rng.randint(1, 60)
        poll(lambda: w.next_seq() >= target, 30, "agent progress before the kill")
        w.kill_agent()
        time.sleep(hold / 2)
        w.start_agent()
        return f"at seq {target}"

    def _modbus_kill(self, hold: float) -> str:
        self.world.plc.stop()
        time.sleep(hold)
        self.world.plc.start()
        return ""

    def _serial_vanish(self, hold: float) -> str:
        sensor = self.world.line.sensor
        sensor.unplug()
        time.sleep(hold)
        sensor.plug()
        return f"back as {sensor.tty}"

    def _garbage(self, hold: float) -> str:
        w = self.world
        frames = self.rng.randint(1, 8)
        w.rtu.corrupt = frames
        w.line.garbage = frames
        poll(lambda: w.rtu.corrupt == 0 and w.line.garbage == 0, 30, "garbage answered")
        return f"{frames} damaged frames each"

    def _disk_full(self, hold: float) -> str:
        filler = self.disk / "filler"
        events = self._queue_events()
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:  # a runaway log, say: whatever space the queue frees is taken again at once
            until = time.monotonic() + hold + 2
            while time.monotonic() < until:
                for size in (1 << 20, 4096, 1):
                    with contextlib.suppress(OSError):
                        while os.write(fd, b"\0" * size):
                            pass
                time.sleep(0.02)  # the filler's pace
        finally:
            os.close(fd)
            filler.unlink()
        return f"queue events while full: {self._queue_events() - events}"

    def _queue_events(self) -> int:
        w = self.world
        return sum(w.log_count(e) for e in (
            "queue full, evicting oldest readings",
            "queue write failed, holding readings in memory",
            "disk full: released the queue's ballast"))

    def _reload(self, event: str) -> None:
        w = self.world
        seen = w.log_count(event)
        assert w.agent is not None
        w.agent.send_signal(signal.SIGHUP)
        poll(lambda: w.log_count(event) > seen, 30, event)

    def _reload_valid(self, hold: float) -> str:
        w = self.world
        w.interval = "120ms" if w.interval == "100ms" else "100ms"
        w.write_config()
        self._reload("config reloaded")
        return f"plc interval {w.interval}"

    def _reload_invalid(self, hold: float) -> str:
        w = self.world
        w.write_config(w.config.read_text().replace('"interval": "150ms"', '"interval": "soon"'))
        self._reload("config reload refused: still running the previous config")
        w.write_config()
        return ""

    def _net_cut(self, hold: float) -> str:
        self.world.proxy.cut()
        time.sleep(5 + 1 + hold)  # longer than the agent's 5 s keepalive
        self.world.proxy.restore()
        return ""

    def _acl_deny(self, hold: float) -> str:
        w = self.world
        w.acl.write_text(DENY_TELEMETRY_ACL)
        w.broker.reload()
        time.sleep(hold * 2)  # the fault's own length
        w.acl.write_text(OPEN_ACL)
        w.broker.reload()
        return ""

    def _restart_broker_with(self, *options: str) -> None:
        w = self.world
        w.proxy.hold()
        w.broker.stop()
        w.broker.listener_options = [f"acl_file {w.acl}", *options]
        self._broker_back()

    def _packet_limit(self, hold: float) -> str:
        self._restart_broker_with("max_packet_size 1500")
        time.sleep(hold * 2)  # the fault's own length
        self._restart_broker_with()
        return ""

