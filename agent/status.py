"""`edge-agent status`: what the running agent is doing, as a technician asks first.

The running agent writes its state every `EVERY` s (and at start, after a reload and at a clean
stop) to `<queue path>.status.json`: the health snapshot (`agent.health.snapshot`: devices'
state, last value time and last error, queue depth, uplink), plus who wrote it (pid and the
process's start time, so a reused pid is not taken for the agent), when (the boot clock, which
NTP does not move, and the boot id), the config it runs and the outcome of the last reload.
The file is replaced atomically (write a temporary file, rename), so a reader never sees half of
it, and it is not fsynced: it is re-written every few seconds and must not wear the SD card.
`status` reads it without touching the agent: it works while the agent runs, after it stopped
(the last state is kept) and when it hangs (the file's age says so).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from agent.model import now_ms

if TYPE_CHECKING:
    from agent.runtime import Agent

EVERY = 5.0
"""Seconds between status writes."""
STALE_AFTER = 3
"""A status older than this many write intervals means the agent is hung."""
SUFFIX = ".status.json"


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


class StatusWriter:
    """Writes the running agent's status file; `write` is cheap (no device is touched)."""

    def __init__(self, path: Path, config_file: str) -> None:
        self.path = path
        self.config_file = config_file
        self.started_ms = now_ms()
        self.last_reload: dict[str, Any] | None = None
        self._due = 0.0

    def reloaded(self, ok: bool, errors: list[str] | None = None,
                 restart_needed: list[str] | None = None) -> None:
        self.last_reload = {"ok": ok, "ts": now_ms(), "errors": (errors or [])[:50],
                            "restart_needed": restart_needed or []}
        self._due = 0.0

    def write_if_due(self, agent: Agent) -> None:
        if time.monotonic() >= self._due:
            self.write(agent)

    def write(self, agent: Agent, state: str = "running") -> None:
        from agent.health import snapshot

        self._due = time.monotonic() + EVERY
        boot_id, uptime = _boot()
        doc = {"v": 1, "state": state, "pid": os.getpid(), "proc_start": proc_start(os.getpid()),
               "boot_id": boot_id, "boot_s": uptime, "written_ms": now_ms(), "every_s": EVERY,
               "config": self.config_file, "started_ms": self.started_ms,
               "broker": f"{agent.config.mqtt.host}:{agent.config.mqtt.port}",
               "last_reload": self.last_reload, "health": snapshot(agent)}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:  # a full disk must not stop the agent; status shows it stale
            with contextlib.suppress(OSError):
                tmp.unlink()
            from agent import log

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


def _ago(ms: int | None, now: int) -> str:
    if ms is None:
        return "never"
    s = max(0, (now - ms) // 1000)
    if s < 120:
        return f"{s}s ago"
    if s < 7200:
        return f"{s // 60}m ago"
    return f"{s // 3600}h {s % 3600 // 60}m ago" if s < 172800 else f"{s // 86400}d ago"


def _size(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def render(doc: dict[str, Any], state: str, out: TextIO, now: int | None = None) -> None:
    now = now or now_ms()
    h = doc.get("health") or {}
    written = _ago(doc.get("written_ms"), now)
    print(f"agent:  {state} (pid {doc.get('pid')}, version {h.get('version', '?')}, "
          f"up since {_ago(doc.get('started_ms'), now)}, status written {written})", file=out)
    r = doc.get("last_reload")
    if r:
        what = "applied" if r["ok"] else f"REFUSED ({len(r['errors'])} error(s)); still " \
                                           "running the previous config"
        print(f"reload: {_ago(r['ts'], now)}: {what}", file=out)
        for e in r["errors"][:10]:
            print(f"        {e}", file=out)
        if r.get("restart_needed"):
            print(f"        restart needed for: {', '.join(r['restart_needed'])}", file=out)
    up = h.get("uplink") or {}
    link = (f"connected since {_ago(up.get('since'), now)}" if up.get("connected") else
            f"DOWN ({up.get('last_error') or 'not connected yet'})")
    print(f"uplink: {doc.get('broker')} {link}; last ack {_ago(up.get('last_ack'), now)}, "
          f"{up.get('reconnects', 0)} reconnect(s)", file=out)
    q = h.get("queue") or {}
    oldest = "" if q.get("oldest_age_s") is None else f", oldest {q['oldest_age_s']:.0f} s old"
    print(f"queue:  {q.get('depth', 0)} reading(s) waiting, {_size(q.get('bytes') or 0)}{oldest}; "
          f"evicted {q.get('evicted', 0)}, dropped {q.get('dropped', 0)}", file=out)
    devices = h.get("devices") or {}
    online = sum(d.get("state") == "online" for d in devices.values())
    print(f"devices: {online} of {len(devices)} online", file=out)
    rows = [("DEVICE", "STATE", "LAST VALUE", "LAST ERROR")] + [
        (name, d.get("state", "?"), _ago(d.get("last_ok"), now),
         f"{d['last_error']} ({_ago(d.get('last_error_ts'), now)})" if d.get("last_error")
         else "-") for name, d in devices.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(row[:3], widths, strict=True))
              + "  " + row[3], file=out)


def status(config_path: str, as_json: bool = False, out: TextIO | None = None,
           err: TextIO | None = None) -> int:
    """`edge-agent status`: exit 0 if the agent runs and its status is fresh, else 1."""
    out, err = out or sys.stdout, err or sys.stderr
    queue_path = _queue_path(config_path, err)
    if queue_path is None:
        return 1
    doc, state = read(path_for(queue_path))
    if doc is None:
        print(f"agent:  not running? {state}", file=out)
        return 1
    if as_json:
        print(json.dumps(doc | {"agent_state": state}, indent=2), file=out)
    else:
        render(doc, state, out)
    return 0 if state == "running" else 1


def _queue_path(config_path: str, err: TextIO) -> str | None:
    """The queue path from the config; from its raw YAML if the config has errors now (a
    technician half way through an edit still wants to see the running agent)."""
    from agent.config import load_config
    from agent.config_yaml import Converter, read_yaml
    from agent.errors import ConfigError

    try:
        return load_config(config_path).queue.path
    except ConfigError as exc:
        print(f"note: {config_path} has {len(exc.issues)} error(s) now (edge-agent check -c "
              f"{config_path}); the running agent is not affected", file=err)
    try:
        raw = Converter().convert(read_yaml(config_path), (), (1, 1))
        path = raw["queue"]["path"]
        assert isinstance(path, str)
    except (ConfigError, TypeError, KeyError, AssertionError):
        print(f"{config_path}: cannot find queue.path, so not the status either", file=err)
        return None
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(config_path)), path))
