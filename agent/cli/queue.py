"""`edge-agent queue`: what is waiting on a gateway, and getting it off one whose uplink is dead.

`status` reads the queue file beside a running agent (read-only; SQLite WAL lets it) and prints
depth, bytes, the oldest reading's age, evicted/dropped/lost counts and the backlog per device.
`export` streams queued readings as JSON lines (one reading per line, the telemetry fields plus
`gateway` and `device`) to stdout, e.g. onto a USB stick; they stay queued unless `--delete`
is given, and then only the rows already written and flushed are deleted, chunk by chunk.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from agent.config.load import AgentConfig, load_config
from agent.core.errors import ConfigError, QueueError
from agent.core.units import parse_duration
from agent.queue import Limits, Queue, schema

CHUNK = 10_000


def _config(path: str) -> AgentConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"edge-agent: invalid config:\n{exc}", file=sys.stderr)
        return None


def _open_ro(path: str) -> sqlite3.Connection | None:
    if not Path(path).exists():
        return None
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def _iso(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _age(ms: int | None) -> str:
    if ms is None:
        return ""
    s = max(0, int(time.time() - ms / 1000))
    d, h, m = s // 86400, s % 86400 // 3600, s % 3600 // 60
    return f"{d}d {h}h {m}m ago" if d else f"{h}h {m}m ago" if h else f"{m}m {s % 60}s ago"


def status(config_path: str, out: TextIO = sys.stdout) -> int:
    """Print the queue's state; exit 0 (1 on a bad config or an unreadable file)."""
    cfg = _config(config_path)
    if cfg is None:
        return 1
    path = cfg.queue.path
    try:
        db = _open_ro(path)
        if db is None:
            print(f"queue      {path} (not created yet: the agent has not run)", file=out)
            return 0
        meta = dict(db.execute(schema.ALL_META)) if schema.has_table(db, schema.META) else {}
        oldest = db.execute(schema.OLDEST_TS).fetchone()
        per_device = db.execute(schema.PER_DEVICE).fetchall()
        used = schema.used_bytes(db)
    except sqlite3.DatabaseError as exc:
        print(f"edge-agent: cannot read queue {path}: {exc}", file=sys.stderr)
        return 1
    oldest_ts = oldest[0] if oldest else None
    print(f"queue      {path}", file=out)
    print(f"readings   {meta.get(schema.DEPTH, 0):,} waiting, {used:,} bytes used", file=out)
    print(f"oldest     {_iso(oldest_ts)} {_age(oldest_ts)}".rstrip(), file=out)
    print(f"next seq   {meta.get(schema.NEXT_SEQ, 1):,}", file=out)
    print(f"evicted    {meta.get(schema.EVICTED, 0):,} (deleted unsent at a bound: max_bytes, "
          f"max_age, min_free, full disk)", file=out)
    print(f"dropped    {meta.get(schema.DROPPED, 0):,} (never written: the disk read-only, "
          f"stalled or locked for longer than the memory buffer lasted)", file=out)
    print(f"lost       {meta.get(schema.LOST, 0):,} (committed, then gone with the file's past: "
          f"its -wal removed or an older copy restored; the log names the seqs)", file=out)
    if per_device:
        width = max(len("DEVICE"), *(len(d) for d, _, _ in per_device))
        print(f"\n{'DEVICE':<{width}}  {'QUEUED':>10}  OLDEST", file=out)
        for device, n, first in per_device:
            print(f"{device:<{width}}  {n:>10,}  {_iso(first)} {_age(first)}", file=out)
    return 0


def parse_since(text: str, now_ms: int | None = None) -> int:
    """`2h` (ago), `2026-11-25`, or `2026-11-25T10:00:00Z` -> UTC epoch ms."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    try:
        return now - int(parse_duration(text) * 1000)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--since {text!r}: give a time ago (30m, 2h, 7d) or an ISO date/time "
                         "(2026-11-25 or 2026-11-25T10:00:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def export(config_path: str, since: str | None = None, device: str | None = None,
           delete: bool = False, out: TextIO = sys.stdout) -> int:
    """Stream queued readings as JSON lines; with `delete`, remove exactly what was written."""
    cfg = _config(config_path)
    if cfg is None:
        return 1
    try:
        since_ms = parse_since(since) if since else None
    except ValueError as exc:
        print(f"edge-agent: {exc}", file=sys.stderr)
        return 1
    db = _open_ro(cfg.queue.path)
    if db is None:
        print(f"edge-agent: no queue at {cfg.queue.path}", file=sys.stderr)
        return 1
    queue = Queue(cfg.queue.path, limits=Limits(0, 0, 0)) if delete else None
    written = deleted = 0
    chunk: list[int] = []
    try:
        sql, params = schema.select_rows(since_ms, device)
        rows = db.execute(sql, params) if schema.has_table(db, schema.READINGS) else ()
        for row in rows:
            line = _line(cfg.gateway.id, *row)
            out.write(json.dumps(line, separators=(",", ":")) + "\n")
            written += 1
            chunk.append(line["seq"])
            if queue is not None and len(chunk) >= CHUNK:
                deleted += _flush_and_delete(out, queue, chunk)
        if queue is not None and chunk:
            deleted += _flush_and_delete(out, queue, chunk)
        out.flush()
    except BrokenPipeError:
        print(f"edge-agent: output closed after {written} readings; deleted {deleted}",
              file=sys.stderr)
        return 1
    except (sqlite3.DatabaseError, QueueError) as exc:
        print(f"edge-agent: cannot read queue {cfg.queue.path}: {exc}", file=sys.stderr)
        return 1
    finally:
        db.close()
        if queue is not None:
            queue.close()
    note = f", deleted {deleted} from the queue" if delete else " (still queued)"
    print(f"exported {written} readings{note}", file=sys.stderr)
    return 0


def _line(gateway: str, seq: int, device: str, metric: str, value: str, unit: str | None,
          ts: int, quality: str) -> dict[str, Any]:
    """One exported reading from its stored columns (schema.EXPORTED, in order)."""
    return {"gateway": gateway, "device": device, "seq": seq, "ts": ts, "metric": metric,
            "value": json.loads(value), "unit": unit, "quality": quality}


def _flush_and_delete(out: TextIO, queue: Queue, chunk: list[int]) -> int:
    """Make the written lines durable, then delete exactly those rows."""
    out.flush()
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.fsync(out.fileno())  # a pipe or terminal: flushed is as far as it goes
    deleted = queue.ack_now(chunk)
    chunk.clear()
    return deleted
