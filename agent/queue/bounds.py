"""The queue's bounds: what it gives up, oldest first, when a limit or the disk says so.

`Bounds` owns invariant 4 (see agent/queue/__init__.py): used bytes under `max_bytes`,
readings younger than `max_age`, `min_free` bytes left on the disk, checked at most every
`check_every` s after a commit; a full disk (SQLITE_FULL) empties the WAL, gives up a ballast
file kept beside the queue (deleting needs a little space too) and evicts the oldest readings.
Every eviction is logged once per episode. It is a component of `agent.queue.store.Queue`
with a narrow interface: it is given the queue's write connection (to read counters and run
PRAGMAs) and an `evict(n)` callback, by which the queue deletes its `n` oldest rows, counts
them in `meta.evicted` and forgets the rows kept in memory for the live stream (an evicted
reading is never sent). The queue calls it under its write lock.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent.core import log
from agent.core.model import now_ms
from agent.queue import schema

BALLAST = 1_000_000
EVICTION_QUIET = 60.0  # seconds without an eviction that end an eviction episode


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of the queue: 0 switches a bound off."""

    max_bytes: int = 1_000_000_000
    max_age: float = 0.0  # seconds
    min_free: int = 100_000_000  # bytes kept free on the queue's filesystem


class Bounds:
    """Eviction and disk-space keeping for the queue file at `path`."""

    def __init__(self, path: Path, limits: Limits, connection: Callable[[], sqlite3.Connection],
                 evict: Callable[[int], int], check_every: float = 1.0) -> None:
        self.path = path
        self.limits = limits
        self._connection = connection  # the queue's current write connection
        self._evict = evict  # deletes the n oldest rows as evicted; returns how many
        self._check_every = check_every
        self._last_check = -check_every
        self._last_eviction = -EVICTION_QUIET
        self._log = log.get("queue")
        self._full_ep = log.Episode(self._log, "queue full, evicting oldest readings",
                                    "queue within bounds")

    def make_room(self, n: int) -> None:
        """Disk full while writing `n` rows: empty the WAL, give up the ballast, evict the
        oldest (at least 1,000 and 5 % of the queue), shrink the file."""
        db = self._connection()
        n = max(n, schema.meta_value(db, schema.DEPTH) // 20, 1000)
        with contextlib.suppress(sqlite3.Error):
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._ballast(release=True)
        self.evict_oldest(n, "disk_full")
        with contextlib.suppress(sqlite3.Error):
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

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

    def evict_oldest(self, n: int, reason: str) -> int:
        """Evict the `n` oldest rows and give their pages back to the disk."""
        evicted = self._evict(n)
        if evicted:
            # If this fails, the freed pages are reused by the next inserts all the same.
            with contextlib.suppress(sqlite3.OperationalError):
                self._connection().execute("PRAGMA incremental_vacuum")
            self._last_eviction = time.monotonic()
            self._full_ep.failed(reason, evicted_now=evicted, evicted_total=self._evicted())
        return evicted

    def _evicted(self) -> int:
        return schema.meta_value(self._connection(), schema.EVICTED)

    def enforce(self, force: bool = False) -> None:
        """Evict oldest-first past any bound; checked at most every `check_every` s."""
        now = time.monotonic()
        if not force and now - self._last_check < self._check_every:
            return
        self._last_check = now
        db = self._connection()
        lim, evicted = self.limits, 0
        used = schema.used_bytes(db)
        if lim.max_bytes and used > lim.max_bytes:
            share = (used - lim.max_bytes * 0.9) / used
            depth = schema.meta_value(db, schema.DEPTH)
            evicted += self.evict_oldest(max(1, math.ceil(depth * share)), "max_bytes")
        if lim.max_age:
            cutoff = now_ms() - int(lim.max_age * 1000)
            while True:
                old = db.execute(schema.OLDEST_SEQ_TS, (1000,)).fetchall()
                n = next((i for i, (_, ts) in enumerate(old) if ts >= cutoff), len(old))
                evicted += self.evict_oldest(n, "max_age") if n else 0
                if n < 1000:
                    break
        if lim.min_free and shutil.disk_usage(self.path.parent).free < lim.min_free:
            # the WAL is the cheapest space to give back; then the oldest readings
            with contextlib.suppress(sqlite3.Error):
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            if shutil.disk_usage(self.path.parent).free < lim.min_free:
                depth = schema.meta_value(db, schema.DEPTH)
                evicted += self.evict_oldest(max(1000, depth // 20), "min_free")
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if not evicted and time.monotonic() - self._last_eviction >= EVICTION_QUIET:
            # a queue held at its bound evicts every few puts: one episode, not one per put
            self._full_ep.recovered(evicted_total=self._evicted())
        self._ballast()
