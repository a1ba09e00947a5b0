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
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.errors import QueueError
from agent.core.model import Row
from agent.queue import schema
from agent.queue.files import CORRUPT, code

_LAST = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Counters:
    """What `meta` says, the oldest queued reading and the bytes used, as last committed."""

    depth: int
    next_seq: int
    evicted: int
    dropped: int
    oldest_ts: int | None
    bytes: int


class Reader:
    """Reads the queue at `path` on its own connection; thread-safe (one lock, reads only)."""

    def __init__(self, path: Path, busy_timeout: float,
                 on_corrupt: Callable[[sqlite3.DatabaseError, int], None],
                 generation: Callable[[], int]) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._on_corrupt = on_corrupt
        self._generation = generation
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._opened_at = -1  # the writer's generation this connection was opened at

    def take_rows(self, after_seq: int, limit: int, before_seq: int | None = None) -> list[Row]:
        """Up to `limit` rows with after_seq < seq (< before_seq), oldest first, as stored."""
        upper = before_seq if before_seq is not None else _LAST
        # One JSON array of the rows, built by SQLite in one step. Values stay their JSON text.
        ((text,),) = self._read(schema.WINDOW, (after_seq, upper, limit))
        rows: list[Row] = list(map(tuple, json.loads(text)))
        ordered = sorted(rows)  # seqs are unique: compared by seq alone, in C
        return rows if ordered == rows else ordered  # SQLite < 3.44: no aggregate order

    def counters(self) -> Counters:
        """The counters in `meta`, the oldest reading's ts and the bytes used by rows."""
        meta = dict(self._read(schema.ALL_META, ()))
        oldest = self._read(schema.OLDEST_TS, ())
        ((used,),) = self._read(schema.USED_BYTES, ())
        return Counters(depth=meta[schema.DEPTH], next_seq=meta[schema.NEXT_SEQ],
                        evicted=meta[schema.EVICTED], dropped=meta[schema.DROPPED],
                        oldest_ts=oldest[0][0] if oldest else None, bytes=int(used))

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

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
