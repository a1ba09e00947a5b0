"""The queue's bounds: what it gives up, oldest first, when a limit or the disk says so.

`Bounds` is the part of `agent.queue.store.Queue` that owns invariant 4 (see
agent/queue/store.py): used bytes under `max_bytes`, readings younger than `max_age`, `min_free`
bytes left on the disk, checked at most every `check_every` s after a commit; a full disk
(SQLITE_FULL) empties the WAL, gives up a ballast file kept beside the queue (deleting needs a
little space too) and evicts the oldest readings. Every eviction is counted in `meta.evicted` and
logged once per episode; the rows kept in memory for the live stream are forgotten, so that an
evicted reading is never sent. It works on the queue's write connection, under the queue's lock.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core import log
from agent.core.model import now_ms

BALLAST = 1_000_000
EVICTION_QUIET = 60.0  # seconds without an eviction that end an eviction episode


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of the queue: 0 switches a bound off."""

    max_bytes: int = 1_000_000_000
    max_age: float = 0.0  # seconds
    min_free: int = 100_000_000  # bytes kept free on the queue's filesystem


class Bounds:
    """Eviction and disk-space keeping, mixed into `Queue` (which sets these attributes)."""

    path: Path
    limits: Limits
    _db: sqlite3.Connection
    _log: Any
    _full_ep: log.Episode
    _check_every: float
    _last_check: float
    _last_eviction: float

    if TYPE_CHECKING:
        def _delete(self, sql: str, params: list[tuple[int, int]] | tuple[object, ...],
                    counter: str | None) -> int: ...

        def _forget_tail(self) -> None: ...

    def _make_room(self, n: int) -> None:
        """Disk full: empty the WAL, give up the ballast, evict the oldest, shrink the file."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._ballast(release=True)
        self._evict_oldest(n, "disk_full")
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _ballast(self, release: bool = False) -> None:
        """A BALLAST-byte file beside the queue, given up when the disk is full so that there
        is room to evict (deleting rows needs a little space too), and put back once there is
        room again."""
        path = self.path.with_name(self.path.name + ".ballast")
        try:
            if release:
                if path.exists():
                    path.unlink()
                    self._log.warning("disk full: released the queue's ballast", bytes=BALLAST)
            elif not path.exists() and shutil.disk_usage(path.parent).free > 4 * BALLAST:
                with open(path, "wb") as f:
                    f.truncate(0)
                    os.posix_fallocate(f.fileno(), 0, BALLAST)
        except OSError:
            with contextlib.suppress(OSError):
                path.unlink()

    def _depth(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key='depth'").fetchone()[0])

    def _used_bytes(self) -> int:
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self._db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def _evict_oldest(self, n: int, reason: str) -> int:
        """Delete the `n` oldest rows, counted as evicted, and give their pages back to the disk."""
        evicted = self._delete(
            "DELETE FROM readings WHERE seq IN (SELECT seq FROM readings ORDER BY seq LIMIT ?)",
            (n,), "evicted")
        if evicted:
            self._forget_tail()  # evicted rows must not be sent from memory
            # If this fails, the freed pages are reused by the next inserts all the same.
            with contextlib.suppress(sqlite3.OperationalError):
                self._db.execute("PRAGMA incremental_vacuum")
            self._last_eviction = time.monotonic()
            self._full_ep.failed(reason, evicted_now=evicted, evicted_total=self._evicted())
        return evicted

    def _evicted(self) -> int:
        return int(self._db.execute("SELECT value FROM meta WHERE key='evicted'").fetchone()[0])

    def _enforce_limits(self, force: bool = False) -> None:
        """Evict oldest-first past any bound; checked at most every `check_every` s."""
        now = time.monotonic()
        if not force and now - self._last_check < self._check_every:
            return
        self._last_check = now
        lim, evicted = self.limits, 0
        used = self._used_bytes()
        if lim.max_bytes and used > lim.max_bytes:
            share = (used - lim.max_bytes * 0.9) / used
            evicted += self._evict_oldest(max(1, math.ceil(self._depth() * share)), "max_bytes")
        if lim.max_age:
            cutoff = now_ms() - int(lim.max_age * 1000)
            while True:
                old = self._db.execute(
                    "SELECT seq, ts FROM readings ORDER BY seq LIMIT 1000").fetchall()
                n = next((i for i, (_, ts) in enumerate(old) if ts >= cutoff), len(old))
                evicted += self._evict_oldest(n, "max_age") if n else 0
                if n < 1000:
                    break
        if lim.min_free and shutil.disk_usage(self.path.parent).free < lim.min_free:
            # the WAL is the cheapest space to give back; then the oldest readings
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            if shutil.disk_usage(self.path.parent).free < lim.min_free:
                evicted += self._evict_oldest(max(1000, self._depth() // 20), "min_free")
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if not evicted and time.monotonic() - self._last_eviction >= EVICTION_QUIET:
            # a queue held at its bound evicts every few puts: one episode, not one per put
            self._full_ep.recovered(evicted_total=self._evicted())
        self._ballast()
