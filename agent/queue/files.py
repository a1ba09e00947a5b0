"""The queue's file on disk: opening it, healing it, and what is kept beside it.

`QueueFile` owns the path and what lives next to it: it opens the write connection (WAL, the
configured `synchronous`, incremental auto-vacuum on a fresh file, the schema of
agent.queue.schema), sets a corrupt file aside as `<path>.corrupt-<UTC time>` with its
-wal/-shm and starts a fresh one (invariant 6), counts the files opened (`generation`, which
tells the reader to reopen), and keeps the seq floor `<path>.seq`, written ahead in steps of
SEQ_RESERVE, so that seqs never go back even across a replaced file (invariant 2). It also
names SQLite's failures (and a read-only filesystem, which SQLite only calls an I/O error) for
the queue's log lines and errors.

It keeps the committed high-water mark `<path>.mark` (agent.queue.mark), written by the queue
after every commit, and compares the file with it at open (invariant 7): a file whose
next_seq is below the mark's lost the commits in between (its WAL removed, an older copy
restored), and one without its tables lost all of them (removed). Of those seqs at most the
mark's depth were still waiting: that many are counted in `meta.lost` and logged with the
seqs, once; next_seq goes up to the mark's and the counters (evicted, dropped, lost) never
below it. A file set aside as corrupt is not a loss (it is kept, and reported), and a queue
without a mark (written before it existed) opens as it is.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from pathlib import Path
from typing import Literal

from agent.core import log
from agent.core.errors import QueueError
from agent.queue import schema
from agent.queue.mark import Mark

SEQ_RESERVE = 100_000
CORRUPT = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
FULL = 13  # SQLITE_FULL
READ_ONLY = "read-only file system"


class QueueFile:
    """The SQLite file at `path` (its directory created if missing)."""

    def __init__(self, path: Path, synchronous: Literal["full", "normal"],
                 busy_timeout: float) -> None:
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout = busy_timeout
        self.generation = 0  # files opened: the reader reopens when it grew
        self.moved_aside: list[str] = []
        self.mark = Mark(path)
        self._seq_floor = 0
        self._set_aside = False  # the file was just set aside: the next one is not a loss
        self._log = log.get("queue")

    def open(self) -> sqlite3.Connection:
        """The write connection; a file found corrupt is set aside once and a fresh one made."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise QueueError(f"cannot open queue {self.path}: {exc}") from exc
        self.generation += 1
        for attempt in (1, 2):
            try:
                return self._connect()
            except sqlite3.DatabaseError as exc:
                if attempt == 1 and code(exc) in CORRUPT:
                    self.move_aside(exc)
                    continue
                raise QueueError(f"cannot open queue {self.path}: {describe(exc)}") from exc
        raise AssertionError("unreachable")

    def _connect(self) -> sqlite3.Connection:
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                             timeout=self.busy_timeout)
        try:
            if fresh:  # must precede the first table: lets eviction give disk space back
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            db.execute("PRAGMA journal_size_limit=67108864")
            floor = self._read_floor()
            had_tables = schema.has_table(db, schema.META)
            schema.create(db, next_seq=max(1, floor))
            self._compare_with_mark(db, had_tables)
        except BaseException:
            db.close()
            raise
        self._seq_floor = floor
        return db

    def _compare_with_mark(self, db: sqlite3.Connection, had_tables: bool) -> None:
        """At open: count and log what the file lost since the mark was written (see the
        module docstring), then write the mark of the file as it now is. Under the write lock,
        so that no other process (`edge-agent queue export --delete`) commits in between."""
        mark = self.mark.read()
        set_aside, self._set_aside = self._set_aside, False
        db.execute("BEGIN IMMEDIATE")
        try:
            meta = dict(db.execute(schema.ALL_META).fetchall())
            (lowest,) = db.execute(schema.LOWEST_SEQ).fetchone()
            changed: dict[str, int] = {}
            gone: tuple[int, int, int] | None = None  # seqs from, to (excluded), at most
            if mark is not None:
                values, low = mark
                upto, waiting = values[schema.NEXT_SEQ], values[schema.DEPTH]
                if set_aside:
                    pass  # its readings are in the file set aside
                elif not had_tables:
                    gone = (low, upto, waiting)
                elif meta[schema.NEXT_SEQ] < upto:
                    start = meta[schema.NEXT_SEQ]
                    gone = (start, upto, min(upto - start, waiting))
                for key in (schema.NEXT_SEQ, schema.EVICTED, schema.DROPPED, schema.LOST):
                    if values[key] > meta[key]:
                        changed[key] = values[key]
                if gone is not None and gone[2] > 0:
                    changed[schema.LOST] = max(meta[schema.LOST], values[schema.LOST]) + gone[2]
            for key, value in changed.items():
                db.execute(schema.SET_META, (value, key))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        meta |= changed
        if gone is not None and gone[2] > 0:
            self._log.error("queue file went back: committed readings lost", seqs_from=gone[0],
                            seqs_to=gone[1] - 1, at_most=gone[2], lost_total=meta[schema.LOST],
                            why="the file is older than its last commit (its -wal removed, "
                                "an older copy restored, or the file removed)")
        elif gone is not None:
            self._log.warning("queue file went back: nothing that was waiting is lost",
                              seqs_from=gone[0], seqs_to=gone[1] - 1)
        self.mark.low = meta[schema.NEXT_SEQ] if lowest is None else int(lowest)
        self.mark.note((key, meta[key]) for key in self.mark.values)

    def move_aside(self, exc: sqlite3.DatabaseError) -> None:
        """Rename the file (and its -wal/-shm) to `<path>.corrupt-<UTC time>`, logged."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                os.replace(src, f"{target}{suffix}")
        self.moved_aside.append(str(target))
        self._set_aside = True
        self._log.error("queue file corrupt, moved aside; starting a fresh queue",
                        error=describe(exc), moved_to=str(target))

    def read_only(self) -> bool:
        """Whether the filesystem refuses to open the file for writing (mounted read-only, or
        turned read-only by the kernel after an I/O error: SQLite then only says "disk I/O
        error"). Cheap: one open(2), nothing written."""
        try:
            os.close(os.open(self.path, os.O_WRONLY))
        except OSError as exc:
            return exc.errno == errno.EROFS
        return False

    def cause(self, exc: BaseException) -> str:
        """Why a write failed, in words for a log line."""
        if (isinstance(exc, OSError) and exc.errno == errno.EROFS) or self.read_only():
            return READ_ONLY
        return describe(exc) if isinstance(exc, sqlite3.Error) else str(exc)

    # the seq floor beside the database
    def _floor_path(self) -> Path:
        return self.path.with_name(self.path.name + ".seq")

    def _read_floor(self) -> int:
        try:
            return int(self._floor_path().read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def raise_floor(self, upto: int) -> None:
        """Before seqs up to `upto` are committed: move the floor ahead of them (synced)."""
        if upto < self._seq_floor:
            return
        floor = upto + SEQ_RESERVE
        tmp = self._floor_path().with_suffix(".tmp")
        with open(tmp, "w") as f:
            f.write(str(floor))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._floor_path())
        self._seq_floor = floor


def code(exc: sqlite3.Error) -> int:
    """SQLite's primary result code of `exc` (-1 & 0xFF if it has none)."""
    return int(getattr(exc, "sqlite_errorcode", -1)) & 0xFF


def describe(exc: sqlite3.Error) -> str:
    """`exc` for a log line or an error, with a hint when another process holds a lock."""
    name = getattr(exc, "sqlite_errorname", "")
    text = str(exc)
    if name == "SQLITE_BUSY" or "locked" in text:
        return f"{text} (another process holds a lock on the queue, e.g. an open sqlite3 shell)"
    return f"{text} ({name})" if name else text
