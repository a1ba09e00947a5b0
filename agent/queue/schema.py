"""The queue file's format: its tables, columns, `meta` keys, and how its bytes are counted.

This module is the one place that knows the layout of the SQLite file: the DDL, the SQL that
the writer (agent.queue.store, agent.queue.bounds), the reader (agent.queue.reader) and the
`edge-agent queue` command run against it, how a reading becomes a row (`as_stored`), and the
byte accounting. Everything else goes through these names.

Layout: `readings` holds one row per queued reading, keyed by its seq (COLUMNS, in order;
`value` is the reading's value as JSON text, `unsynced` NULL or "boot:offset" when the clock
was not synchronized); `meta` holds the counters (META_KEYS) as key/value integers. No format
version is stored in the file: a queue written by 0.1.0 is recognised by its missing `unsynced`
column, which `create` adds. Bytes used are the pages in use, (page_count - freelist_count) x
page_size: rows and their index, what max_bytes bounds and what stats() reports.
"""

from __future__ import annotations

import functools
import json
import math
import sqlite3
from typing import Final

from agent.core.model import ROW_FIELDS, Reading

READINGS: Final = "readings"
META: Final = "meta"
COLUMNS: Final = ROW_FIELDS
"""The columns of `readings`, in table order: the fields of agent.core.model.Row."""

DEPTH: Final = "depth"  # rows in `readings`, kept exact by every insert and delete
EVICTED: Final = "evicted"  # readings deleted unsent at a bound (persistent count)
DROPPED: Final = "dropped"  # readings never written (the memory buffer full, or held at close)
NEXT_SEQ: Final = "next_seq"  # the seq the next reading gets; only grows
LOST: Final = "lost"  # committed readings gone with the file's past (WAL removed, old copy)
META_KEYS: Final = (DEPTH, EVICTED, DROPPED, NEXT_SEQ, LOST)

_CREATE = f"""
BEGIN;
CREATE TABLE IF NOT EXISTS {READINGS} (
    seq     INTEGER PRIMARY KEY,  -- from meta.next_seq, never reused
    device  TEXT NOT NULL,
    metric  TEXT NOT NULL,
    value   TEXT NOT NULL,        -- JSON: keeps bool/int/float/str/null apart
    unit    TEXT,
    ts      INTEGER NOT NULL,     -- UTC epoch ms at poll time
    quality TEXT NOT NULL,
    unsynced TEXT                 -- NULL, or "boot:offset" when the clock was not synchronized
);
CREATE TABLE IF NOT EXISTS {META} (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO {META} VALUES ('{DEPTH}', (SELECT count(*) FROM {READINGS}));
INSERT OR IGNORE INTO {META} VALUES ('{EVICTED}', 0);
INSERT OR IGNORE INTO {META} VALUES ('{DROPPED}', 0);
INSERT OR IGNORE INTO {META} VALUES ('{NEXT_SEQ}', {{next_seq:d}});
INSERT OR IGNORE INTO {META} VALUES ('{LOST}', 0);
COMMIT;
"""


def create(db: sqlite3.Connection, next_seq: int) -> None:
    """Create the tables and counters if missing (one transaction; `next_seq` only for a new
    file) and bring an older queue up to date: 0.1.0's lacks `unsynced`, and files written
    before the `lost` counter lack that key (added as 0)."""
    db.executescript(_CREATE.format(next_seq=next_seq))
    columns = {row[1] for row in db.execute(f"PRAGMA table_info({READINGS})")}
    if "unsynced" not in columns:  # a queue written by 0.1.0
        db.execute(f"ALTER TABLE {READINGS} ADD COLUMN unsynced TEXT")


# byte accounting
USED_BYTES: Final = ("SELECT (page_count - freelist_count) * page_size"
                     " FROM pragma_page_count, pragma_freelist_count, pragma_page_size")
"""Bytes used by rows and indexes: the pages in use (free pages are not counted)."""


def used_bytes(db: sqlite3.Connection) -> int:
    return int(db.execute(USED_BYTES).fetchone()[0])


# counters
ALL_META: Final = f"SELECT key, value FROM {META}"
META_VALUE: Final = f"SELECT value FROM {META} WHERE key = ?"
ADD_TO_META: Final = f"UPDATE {META} SET value = value + ? WHERE key = ?"
SET_META: Final = f"UPDATE {META} SET value = ? WHERE key = ?"
COUNT_INSERT: Final = (
    f"UPDATE {META} SET value = CASE key WHEN '{NEXT_SEQ}' THEN ?1 WHEN '{DEPTH}' THEN value + ?2"
    f" ELSE value + ?3 END WHERE key IN ('{NEXT_SEQ}', '{DEPTH}', '{DROPPED}')")
"""After an insert: next_seq = ?1, depth += ?2 (inserted - deleted), dropped += ?3."""
LOWEST_SEQ: Final = f"SELECT min(seq) FROM {READINGS}"


def meta_value(db: sqlite3.Connection, key: str) -> int:
    return int(db.execute(META_VALUE, (key,)).fetchone()[0])


# rows
def as_stored(r: Reading) -> tuple[str, str, str, str | None, int, str]:
    """A reading as stored: (device, metric, value as JSON, unit, ts, quality); the writer
    adds seq and unsynced. JSON has no NaN/inf: such a value is stored as null, quality
    not_finite, so that what is queued is exactly what can be sent. Floats and ints take a
    fast path (their repr is their JSON); everything else goes through json.dumps."""
    v = r.value
    t = type(v)
    if t is float:
        if math.isfinite(v):  # type: ignore[arg-type]
            return (r.device, r.metric, repr(v), r.unit, r.ts, r.quality)
        return (r.device, r.metric, "null", r.unit, r.ts, "not_finite")
    if t is int:
        return (r.device, r.metric, repr(v), r.unit, r.ts, r.quality)
    return (r.device, r.metric, json.dumps(v), r.unit, r.ts, r.quality)


@functools.cache
def insert_sql(rows: int, tagged: bool, first: bool = False) -> str:
    """INSERT of `rows` rows in COLUMNS order, with seq bound (`first`) or NULL (the next
    one), unsynced bound (`tagged`) or NULL."""
    one = f"({'?' if first else 'NULL'}, ?, ?, ?, ?, ?, ?, {'?' if tagged else 'NULL'})"
    return f"INSERT INTO {READINGS} VALUES " + ", ".join([one] * rows)


DELETE_SPAN: Final = f"DELETE FROM {READINGS} WHERE seq BETWEEN ? AND ?"
EVICT_OLDEST: Final = (f"DELETE FROM {READINGS} WHERE seq IN"
                       f" (SELECT seq FROM {READINGS} ORDER BY seq LIMIT ?)")
OLDEST_TS: Final = f"SELECT ts FROM {READINGS} ORDER BY seq LIMIT 1"
OLDEST_SEQ_TS: Final = f"SELECT seq, ts FROM {READINGS} ORDER BY seq LIMIT ?"
WINDOW: Final = (f"SELECT json_group_array(json_array({', '.join(COLUMNS)})) FROM"
                 f" (SELECT * FROM {READINGS} WHERE seq > ? AND seq < ? ORDER BY seq LIMIT ?)")
"""Rows after_seq < seq < before_seq (at most ?), as one JSON array of arrays in COLUMNS order:
built by SQLite in one statement step; values stay their JSON text."""
PER_DEVICE: Final = (f"SELECT device, count(*), min(ts) FROM {READINGS}"
                     " GROUP BY device ORDER BY device")


EXPORTED: Final = COLUMNS[:-1]
"""The columns `edge-agent queue export` reads: all but `unsynced`, which it does not carry
(and which a 0.1.0 file the agent has not opened since lacks)."""


def select_rows(since_ms: int | None = None, device: str | None = None) -> tuple[str, list[object]]:
    """The EXPORTED columns of all rows in seq order, optionally from `since_ms` on and of one
    `device`."""
    where: list[str] = []
    params: list[object] = []
    if since_ms is not None:
        where.append("ts >= ?")
        params.append(since_ms)
    if device:
        where.append("device = ?")
        params.append(device)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {', '.join(EXPORTED)} FROM {READINGS}{clause} ORDER BY seq", params


def has_table(db: sqlite3.Connection, name: str) -> bool:
    """Whether the file has table `name` (a file the agent never finished creating may not)."""
    found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return found.fetchone() is not None
