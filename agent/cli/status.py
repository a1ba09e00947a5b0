"""`edge-agent status`: what the running agent is doing, as a technician asks first.

This module owns what the command prints: the status file (`agent.service.status_file`) the
running agent keeps beside its queue, read without touching the agent, as a few lines a
technician reads first (or as JSON with `--json`); exit 0 only if the agent runs and its status
is fresh.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, TextIO

from agent.core.model import now_ms
from agent.service.status_file import path_for, read


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
    if up.get("delivery") == "dropping":
        print("        THE BROKER ACKNOWLEDGES BUT DOES NOT DELIVER this gateway's messages "
              "(MQTT 3.1.1): check its ACL; readings are kept queued", file=out)
    q = h.get("queue") or {}
    oldest = "" if q.get("oldest_age_s") is None else f", oldest {q['oldest_age_s']:.0f} s old"
    print(f"queue:  {q.get('depth', 0)} reading(s) waiting, {_size(q.get('bytes') or 0)}{oldest}; "
          f"evicted {q.get('evicted', 0)}, dropped {q.get('dropped', 0)}"
          + (f", LOST {q['lost']}" if q.get("lost") else ""), file=out)
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
    from agent.config.load import load_config
    from agent.config.yaml import Converter, read_yaml
    from agent.core.errors import ConfigError

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
