"""The status file: what the running agent is doing, written for `edge-agent status` to read.

The running agent writes its state every `EVERY` s (and at start, after a reload and at a clean
stop) to `<queue path>.status.json`: the health snapshot (`agent.service.health.snapshot`: devices'
state, last value time and last error, queue depth, uplink), plus who wrote it (pid and the
process's start time, so a reused pid is not taken for the agent), when (the boot clock, which
NTP does not move, and the boot id), the config it runs and the outcome of the last reload.
The file is replaced atomically (write a temporary file, rename), so a reader never sees half of
it, and it is not fsynced: it is re-written every few seconds and must not wear the SD card. It
is written on a thread of its own, waited for at most WRITE_WAIT s: the main thread, which
writes it, also answers signals and pings systemd's watchdog, and a frozen disk must stop
neither (while a write is stuck, later ones are skipped: the file's age then says so).
`read` gives it back with the state the agent is in, without touching the agent: it works while
the agent runs, after it stopped (the last state is kept) and when it hangs (the file's age says
so). The `status` command (`agent.cli.status`) prints it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from agent.core.model import now_ms
from agent.service.view import AgentView

EVERY = 5.0
"""Seconds between status writes."""
STALE_AFTER = 3
"""A status older than this many write intervals means the agent is hung."""
SUFFIX = ".status.json"
WRITE_WAIT = 1.0
"""Seconds `write` waits for the disk before it lets the write finish on its own."""


def path_for(queue_path: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(queue_path)}{SUFFIX}")


def _boot() -> tuple[str, float]:
    """(boot id, seconds since boot): a clock NTP does not move."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot_id = ""
    return boot_id, time.clock_gettime(time.CLOCK_BOOTTIME)


def proc_start(pid: int) -> int | None:
    """When process `pid` started (clock ticks since boot), or None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


class StatusFile:
    """Writes the running agent's status file; `write` is cheap (no device is touched)."""

    def __init__(self, path: Path, config_file: str) -> None:
        self.path = path
        self.config_file = config_file
        self.started_ms = now_ms()
        self.last_reload: dict[str, Any] | None = None
        self._due = 0.0
        self._writing: threading.Thread | None = None
        self._stuck = False  # a write waited for the disk longer than WRITE_WAIT (logged)

    def reloaded(self, ok: bool, errors: list[str] | None = None,
                 restart_needed: list[str] | None = None) -> None:
        self.last_reload = {"ok": ok, "ts": now_ms(), "errors": (errors or [])[:50],
                            "restart_needed": restart_needed or []}
        self._due = 0.0

    def write_if_due(self, view: AgentView) -> None:
        if time.monotonic() >= self._due:
            self.write(view)

    def write(self, view: AgentView, state: str = "running") -> None:
        from agent.service.health import snapshot

        self._due = time.monotonic() + EVERY
        boot_id, uptime = _boot()
        doc = {"v": 1, "state": state, "pid": os.getpid(), "proc_start": proc_start(os.getpid()),
               "boot_id": boot_id, "boot_s": uptime, "written_ms": now_ms(), "every_s": EVERY,
               "config": self.config_file, "started_ms": self.started_ms,
               "broker": f"{view.mqtt_host}:{view.mqtt_port}",
               "last_reload": self.last_reload, "health": snapshot(view)}
        from agent.core import log

        if self._writing is not None and self._writing.is_alive():
            if not self._stuck:
                self._stuck = True
                log.get("agent").warning("status file not written: the last write still "
                                         "waits for the disk", path=str(self.path))
            return
        self._stuck = False
        self._writing = threading.Thread(target=self._replace, name="status-file", daemon=True,
                                         args=(json.dumps(doc, separators=(",", ":")),))
        self._writing.start()
        self._writing.join(WRITE_WAIT)

    def _replace(self, text: str) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:  # a full disk must not stop the agent; status shows it stale
            with contextlib.suppress(OSError):
                tmp.unlink()
            from agent.core import log

            log.get("agent").warning("status file not written", path=str(self.path),
                                     error=str(exc))


def read(path: Path) -> tuple[dict[str, Any] | None, str]:
    """The status document and what state the agent is in: running, stopped, gone, hung."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, f"no status file at {path}: the agent has not run with this queue"
    except (OSError, ValueError) as exc:
        return None, f"cannot read {path}: {exc}"
    boot_id, uptime = _boot()
    age = uptime - float(doc.get("boot_s", 0))
    if doc.get("state") == "stopped":
        return doc, "stopped"
    if doc.get("boot_id") != boot_id:
        return doc, "gone: not running since the gateway rebooted"
    if proc_start(int(doc.get("pid", 0))) != doc.get("proc_start"):
        return doc, f"gone: pid {doc.get('pid')} is not running (it did not stop cleanly)"
    if age > STALE_AFTER * float(doc.get("every_s", EVERY)):
        return doc, f"hung? running (pid {doc.get('pid')}) but its status is {age:.0f} s old"
    return doc, "running"
