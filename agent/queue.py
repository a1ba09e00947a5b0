"""The durable store-and-forward queue: every reading lives here until the broker acknowledged it.

Invariants (each is tested in tests/test_queue.py):

1. Durable on commit. `put()` writes one poll's readings in one transaction; once it returns,
   the readings survive a process crash, and with `synchronous=full` (the default) a power cut.
   `normal` trades the last transactions before a power cut for fewer SD-card writes.
2. One seq per reading, never reused. The seq is taken from `meta.next_seq` inside the same
   transaction that inserts the rows, so it grows by exactly one per reading across restarts,
   even after the table was emptied (a rowid would be reused; this counter is not).
3. Deleted only on acknowledgement. Rows leave only through `ack(seqs)`, which the forwarder
   calls with the seqs of messages the broker acknowledged. Nothing else deletes.
4. Ordered. `take()` returns rows in seq order, so within a device readings leave in the order
   they were polled. A re-send after a reconnect or restart carries the same seq.
5. Memory does not grow with the backlog: `take()` reads a bounded window through the primary
   key; nothing holds the whole backlog in memory.

One connection, guarded by a lock, serves the poll threads (put) and the forwarder (take, ack).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agent.errors import QueueError
from agent.model import QueuedReading, Reading

_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    seq     INTEGER PRIMARY KEY,  -- from meta.next_seq, never reused
    device  TEXT NOT NULL,
    metric  TEXT NOT NULL,
    value   TEXT NOT NULL,        -- JSON: keeps bool/int/float/str/null apart
    unit    TEXT,
    ts      INTEGER NOT NULL,     -- UTC epoch ms at poll time
    quality TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (key, value) VALUES ('next_seq', 1);
"""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """What is waiting: readings, the oldest one's timestamp (ms), and the next seq."""

    depth: int
    oldest_ts: int | None
    next_seq: int


class Queue:
    """The SQLite queue at `path` (created with its directory if missing)."""

    def __init__(
        self,
        path: str | Path,
        synchronous: Literal["full", "normal"] = "full",
        on_put: Callable[[], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self._on_put = on_put
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=10.0
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise QueueError(f"cannot open queue {self.path}: {exc}") from exc

    def set_listener(self, on_put: Callable[[], None] | None) -> None:
        """Call `on_put()` after every committed put (the forwarder's wake-up)."""
        self._on_put = on_put

    def put(self, readings: Sequence[Reading]) -> list[int]:
        """Store one poll's readings in one transaction; returns their seqs."""
        if not readings:
            return []
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    (first,) = self._db.execute(
                        "SELECT value FROM meta WHERE key = 'next_seq'"
                    ).fetchone()
                    self._db.executemany(
                        "INSERT INTO readings VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [
                            (first + i, r.device, r.metric, json.dumps(r.value), r.unit, r.ts,
                             r.quality)
                            for i, r in enumerate(readings)
                        ],
                    )
                    self._db.execute(
                        "UPDATE meta SET value = ? WHERE key = 'next_seq'",
                        (first + len(readings),),
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise QueueError(f"cannot write to queue {self.path}: {exc}") from exc
        if self._on_put is not None:
            self._on_put()
        return list(range(first, first + len(readings)))

    def take(self, after_seq: int, limit: int) -> list[QueuedReading]:
        """Up to `limit` queued readings with seq > `after_seq`, oldest first. Deletes nothing."""
        with self._lock:
            try:
                rows = self._db.execute(
                    "SELECT seq, device, metric, value, unit, ts, quality FROM readings"
                    " WHERE seq > ? ORDER BY seq LIMIT ?",
                    (after_seq, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise QueueError(f"cannot read queue {self.path}: {exc}") from exc
        return [
            QueuedReading(seq, Reading(device, metric, json.loads(value), unit, ts, quality))
            for seq, device, metric, value, unit, ts, quality in rows
        ]

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete the rows the broker acknowledged, in one transaction; returns rows deleted."""
        params = [(s,) for s in seqs]
        if not params:
            return 0
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    before = self._db.total_changes
                    self._db.executemany("DELETE FROM readings WHERE seq = ?", params)
                    deleted = self._db.total_changes - before
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise QueueError(f"cannot delete from queue {self.path}: {exc}") from exc
        return deleted

    def stats(self) -> QueueStats:
        """Depth, oldest timestamp and next seq, read consistently."""
        with self._lock:
            try:
                (depth,) = self._db.execute("SELECT count(*) FROM readings").fetchone()
                row = self._db.execute(
                    "SELECT ts FROM readings ORDER BY seq LIMIT 1"
                ).fetchone()
                oldest = row[0] if row else None
                (next_seq,) = self._db.execute(
                    "SELECT value FROM meta WHERE key = 'next_seq'"
                ).fetchone()
            except sqlite3.Error as exc:
                raise QueueError(f"cannot read queue {self.path}: {exc}") from exc
        return QueueStats(depth=depth, oldest_ts=oldest, next_seq=next_seq)

    def close(self) -> None:
        """Checkpoint the WAL and close; idempotent."""
        with self._lock:
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._db.close()
            except sqlite3.ProgrammingError:
                pass  # already closed
            except sqlite3.Error as exc:
                raise QueueError(f"cannot close queue {self.path}: {exc}") from exc
