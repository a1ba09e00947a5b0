"""systemd integration: readiness, status, reload and stop notices, and the watchdog.

The protocol is sd_notify(3), done by hand: newline-separated `KEY=VALUE` lines in one datagram
to the AF_UNIX socket named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
Without `NOTIFY_SOCKET` (a shell, a test, the demo) every call does nothing. A send never blocks
the agent (`MSG_DONTWAIT`) and never raises: a notice that cannot be sent is dropped.

What the agent says, and when (`agent.service.runtime.run`): `READY=1` once the config is
loaded, the queue is open and polling has started; `STATUS=` (devices online, queue depth, uplink)
every `STATUS_EVERY` s when it changed, and at once when a device goes on- or offline or the uplink
connects or drops; `RELOADING=1` while a SIGHUP reload runs, then `READY=1`
again; `STOPPING=1` when a stop begins.

The watchdog (`WatchdogSec=`, passed as `$WATCHDOG_USEC`): `WATCHDOG=1` is sent every quarter
period, but only while the agent makes progress (`stalled`). A poll in progress for longer than
one watchdog period is hung, as is a scheduler that finished no beat at all for a period plus
the shortest interval, a forwarder loop that did not go round, or a dead uplink thread. Then
the pings stop, systemd kills the agent within one more period and `Restart=` starts it
again. A device that is merely offline is progress: its polls fail within their timeout and back
off. A device `timeout` of half the period or more comes close to being taken for a hang, so the
agent warns of it at start.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from agent.core import log
from agent.core.errors import QueueError
from agent.service.view import AgentView

STATUS_EVERY = 5.0
"""Most seconds between STATUS= updates (only sent when the text changed)."""


class Notifier:
    """Sends sd_notify messages to one socket; does nothing without an address."""

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._sock: socket.socket | None = None
        self.failed = 0  # messages that could not be sent

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        return cls((os.environ if env is None else env).get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send `KEY=VALUE` fields as one datagram; True if it was handed to the kernel."""
        if self.address is None:
            return False
        addr = "\0" + self.address[1:] if self.address.startswith("@") else self.address
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode(), socket.MSG_DONTWAIT, addr)
        except OSError:
            self.failed += 1
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_period(env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog period in seconds from `$WATCHDOG_USEC`, if it is meant for this process."""
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
        pid = int(env.get("WATCHDOG_PID") or os.getpid())
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 and pid == os.getpid() else None


def stalled(view: AgentView, limit: float, now: float | None = None) -> list[str]:
    """Why the agent is not making progress, allowing `limit` s per step; empty if it is."""
    now = time.monotonic() if now is None else now
    why: list[str] = []
    devices = view.devices()
    for d in devices:
        since = d.busy_since
        if since is not None and now - since > limit:
            why.append(f"poll of {d.name} running for {now - since:.0f} s")
    if devices:
        last = max(d.beat_at for d in devices)
        if now - last > limit + min(d.interval for d in devices):
            why.append(f"no poll finished for {now - last:.0f} s")
    up = view.uplink()
    loop = up.loop_at
    if now - loop > limit + view.reconnect_min:
        why.append(f"forwarder loop stalled for {now - loop:.0f} s")
    if not up.alive:
        why.append("uplink thread stopped")
    return why


def _summary(view: AgentView) -> tuple[int, int, bool]:
    """What STATUS= shows that is cheap to look at every tick: devices online, devices, uplink."""
    devices = view.devices()
    return (sum(d.state == "online" for d in devices), len(devices), view.uplink().connected)


def status_text(view: AgentView) -> str:
    """One line for `systemctl status`: devices online, queue depth, uplink."""
    online, total, connected = _summary(view)
    try:
        queued = f"{view.queue_stats().depth} queued"
    except QueueError:
        queued = "queue unreadable"
    return (f"{online}/{total} devices online, {queued}, "
            f"uplink {'connected' if connected else 'down'}")


class Service:
    """The agent's side of its systemd service: call `ready`, then `tick` from the main loop."""

    def __init__(self, notifier: Notifier, period: float | None) -> None:
        self.notifier = notifier
        self.period = period
        self.pings = 0
        self.stuck: list[str] = []  # why the last check withheld the ping
        self._next_ping = 0.0
        self._next_status = 0.0
        self._status = ""
        self._summary: tuple[int, int, bool] | None = None
        self._log = log.get("systemd")
        self._episode = log.Episode(self._log, "watchdog withheld: not making progress",
                                    "watchdog resumed")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Service:
        return cls(Notifier.from_env(env), watchdog_period(env))

    def ready(self, view: AgentView, note: str = "") -> None:
        """Started (or reloaded): READY=1 with the current status."""
        self._status = (f"{note}; " if note else "") + status_text(view)
        self._summary = _summary(view)
        self._next_status = time.monotonic() + STATUS_EVERY
        self.notifier.send("READY=1", f"STATUS={self._status}")
        if self.period is not None:
            limit = self.period
            for d in view.devices():
                if d.timeout >= limit / 2:
                    self._log.warning("device timeout too long for the watchdog: a poll that "
                                      "waits this long is taken for a hang", device=d.name,
                                      timeout_s=d.timeout, watchdog_s=limit)

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading config")

    def stopping(self) -> None:
        self.notifier.send("STOPPING=1", "STATUS=stopping: finishing polls, keeping unsent "
                           "readings queued")

    def tick(self, view: AgentView) -> None:
        """From the main loop: ping the watchdog if due and the agent progresses; STATUS."""
        now = time.monotonic()
        was_stuck = bool(self.stuck)
        if self.period is not None and now >= self._next_ping:
            self.stuck = stalled(view, self.period, now)
            if self.stuck:
                self._episode.failed("stalled", reasons=self.stuck)
            else:
                self._episode.recovered()
                self._next_ping = now + self.period / 4
                self.pings += self.notifier.send("WATCHDOG=1")
        summary = _summary(view)
        if (now >= self._next_status or bool(self.stuck) != was_stuck
                or (summary != self._summary and not self.stuck)):
            self._next_status = now + STATUS_EVERY
            self._summary = summary
            text = ("STALLED: " + "; ".join(self.stuck)) if self.stuck else status_text(view)
            if text != self._status:
                self._status = text
                self.notifier.send(f"STATUS={text}")
