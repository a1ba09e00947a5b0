"""The queue's read side: its own SQLite connection, so reading never waits for a commit.

`Reader` owns a second connection to the queue file and serves everything that only reads:
the forwarder's windows from the file (`take_rows`) and the counters (`counters`). In WAL
mode a reader sees the last committed state and neither waits for the writer nor holds it up,
so the forwarder takes and renders the next messages while the committer inserts and syncs
the disk (one lock shared by both would make each wait for the other's SQL and fsync). Each
window is read in one statement step: every step lets go of the GIL, and getting it back
beside a busy thread can take a switch interval (5 ms). When the writer replaced a corrupt
file (`generation` grew) the reader reopens; a corruption found while reading is handed to
`on_corrupt` (the writer's healing, told which generation the reader saw) and the read is
tried once more.

The counters are read on a thread of the reader's own (`queue-stats`), and a caller waits at
most STATS_WAIT s for them: on a frozen filesystem even a read can block (a reader that
starts after the last commit writes its read mark into the WAL index, the -shm file, and that
write waits for the thaw), and health, the status page and systemd's status line must not. The
caller then gets the last counters read, with meta's counters as this process last committed
them (`committed`, the high-water mark's values: exact, since nothing commits while the writer
is stuck on the same disk).
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.errors import QueueError
from agent.core.model import Row
from agent.queue import schema
from agent.queue.files import CORRUPT, code

_LAST = 2**63 - 1
STATS_WAIT = 1.0
"""Seconds `counters()` waits for a read before it answers with the last counters read."""


@dataclass(frozen=True, slots=True)
class Counters:
    """What `meta` says, the oldest queued reading and the bytes used, as last committed."""

    depth: int
    next_seq: int
    evicted: int
    dropped: int
    oldest_ts: int | None
    bytes: int
    lost: int = 0


class Reader:
    """Reads the queue at `path` on its own connection; thread-safe (one lock, reads only)."""

    def __init__(self, path: Path, busy_timeout: float,
                 on_corrupt: Callable[[sqlite3.DatabaseError, int], None],
                 generation: Callable[[], int],
                 committed: Callable[[], Mapping[str, int]] = dict) -> None:
        self.path = path
        self._committed = committed
        self._busy_timeout = busy_timeout
        self._on_corrupt = on_corrupt
        self._generation = generation
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._opened_at = -1  # the writer's generation this connection was opened at
        self._reads = _Reads()  # the counters' (see the module docstring)

    def take_rows(self, after_seq: int, limit: int, before_seq: int | None = None) -> list[Row]:
        """Up to `limit` rows with after_seq < seq (< before_seq), oldest first, as stored."""
        upper = before_seq if before_seq is not None else _LAST
        # One JSON array of the rows, built by SQLite in one step. Values stay their JSON text.
        ((text,),) = self._read(schema.WINDOW, (after_seq, upper, limit))
        rows: list[Row] = list(map(tuple, json.loads(text)))
        ordered = sorted(rows)  # seqs are unique: compared by seq alone, in C
        return rows if ordered == rows else ordered  # SQLite < 3.44: no aggregate order

    def counters(self, wait: float = STATS_WAIT) -> Counters:
        """The counters in `meta`, the oldest reading's ts and the bytes used by rows, read
        after this call began; the last ones read if that takes longer than `wait` s."""
        t0, reads = time.monotonic(), self._reads
        with reads.cond:
            if reads.closed:
                raise QueueError(f"queue {self.path} is closed")
            want = reads.begun + 1  # a read that begins after this call
            reads.wanted = max(reads.wanted, want)
            if reads.worker is None or not reads.worker.is_alive():
                reads.worker = threading.Thread(target=_serve, args=(reads, weakref.ref(self)),
                                                name="queue-stats", daemon=True)
                reads.worker.start()
            reads.cond.notify_all()
            while reads.done[0] < want:
                since = reads.since
                end = t0 + wait if since is None else min(t0 + wait, since + wait)
                left = end - time.monotonic()
                if left <= 0:  # the disk holds the read up: answer with what was read last
                    if reads.last is None:
                        raise QueueError(f"cannot read queue {self.path}: no answer in "
                                         f"{wait:g} s")
                    return self._known(reads.last)
                reads.cond.wait(left)
            result = reads.done[1]
        if isinstance(result, QueueError):
            raise result
        return result

    def _known(self, last: Counters) -> Counters:
        """`last` with meta's counters as this process last committed them."""
        c = self._committed()
        if not c:
            return last
        return dataclasses.replace(last, depth=c[schema.DEPTH], next_seq=c[schema.NEXT_SEQ],
                                   evicted=c[schema.EVICTED], dropped=c[schema.DROPPED],
                                   lost=c[schema.LOST])

    def _read_counters(self) -> Counters:
        meta = dict(self._read(schema.ALL_META, ()))
        oldest = self._read(schema.OLDEST_TS, ())
        ((used,),) = self._read(schema.USED_BYTES, ())
        return Counters(depth=meta[schema.DEPTH], next_seq=meta[schema.NEXT_SEQ],
                        evicted=meta[schema.EVICTED], dropped=meta[schema.DROPPED],
                        oldest_ts=oldest[0][0] if oldest else None, bytes=int(used),
                        lost=meta.get(schema.LOST, 0))

    def close(self, wait: float | None = None) -> None:
        """Close the connection (unless a read still holds it after `wait` s: a frozen disk;
        the process is about to end then) and stop the counters' thread."""
        with self._reads.cond:
            self._reads.closed = True
            self._reads.cond.notify_all()
        if not self._lock.acquire(timeout=-1 if wait is None else wait):
            return
        try:
            if self._db is not None:
                self._db.close()
                self._db = None
        finally:
            self._lock.release()

    def _read(self, sql: str, params: tuple[object, ...]) -> list[tuple[Any, ...]]:
        for attempt in (1, 2):
            seen = -1
            try:
                with self._lock:
                    db = self._connection()
                    seen = self._opened_at
                    return db.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                if attempt == 1 and code(exc) in CORRUPT:
                    # the writer sets the file aside (unless it did since `seen`): read anew
                    self._on_corrupt(exc, seen)
                    continue
                raise QueueError(f"cannot read queue {self.path}: {exc}") from exc
        raise AssertionError("unreachable")

    def _connection(self) -> sqlite3.Connection:
        """The read connection, (re)opened on the writer's current file."""
        generation = self._generation()
        if self._db is None or self._opened_at != generation:
            if self._db is not None:
                self._db.close()
            self._db = sqlite3.connect(self.path, isolation_level=None,
                                       check_same_thread=False, timeout=self._busy_timeout)
            self._opened_at = generation
        return self._db


class _Reads:
    """The counters' reads: asked for by callers, made by the `queue-stats` thread (`_serve`),
    under `cond`. Kept apart from the `Reader`, which the thread only holds weakly: a queue
    dropped without `close()` (a crash, in tests) is not kept alive by it."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.wanted = 0  # reads asked for
        self.begun = 0  # reads begun (the one running is number `begun`)
        self.done: tuple[int, Counters | QueueError] = (0, QueueError("not read yet"))
        self.last: Counters | None = None  # the last counters read
        self.since: float | None = None  # when the read running began
        self.worker: threading.Thread | None = None
        self.closed = False


def _serve(reads: _Reads, ref: weakref.ReferenceType[Reader]) -> None:
    """The `queue-stats` thread: one read whenever one was asked for since the last."""
    while True:
        with reads.cond:
            while reads.begun >= reads.wanted and not reads.closed:
                if ref() is None:
                    return
                reads.cond.wait(1.0)
            if reads.closed:
                return
            reads.begun += 1
            number, reads.since = reads.begun, time.monotonic()
        reader = ref()
        if reader is None:
            return
        try:
            result: Counters | QueueError = reader._read_counters()
        except QueueError as exc:
            result = exc
        except Exception as exc:  # a bug must not leave every caller waiting
            result = QueueError(f"cannot read queue {reader.path}: {exc!r}")
        del reader  # not held while waiting
        with reads.cond:
            reads.done, reads.since = (number, result), None
            if isinstance(result, Counters):
                reads.last = result
            reads.cond.notify_all()
