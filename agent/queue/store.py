"""The durable store-and-forward queue: every reading lives here until the broker acknowledged it.

Invariants (each is tested in tests/queue/):

1. Durable on commit. `put()` writes one poll's readings in one transaction (WAL), shared with
   the other polls that finished meanwhile (group commit: one fsync for all); once it returns
   they survive a crash, and with `synchronous=full` (the default) a power cut. `normal`
   writes the SD card less but may lose the last transactions on a power cut. `submit()` is
   `put()` committed by a background thread, which lets the polls submitted within GATHER
   (5 ms) of each other share a transaction: the poll thread does not wait for the disk;
   `close()` commits what was submitted. Deletes after an acknowledgement do not wait for the
   disk: `ack_later()` (the forwarder's) rides in the committer's next transaction, `ack()`
   commits without a sync of its own; a power cut before the next synced commit can only
   bring acknowledged rows back (sent again: a duplicate, never a loss).
2. One seq per reading, never reused. The seq comes from `meta.next_seq` in the same transaction
   as the rows, so it grows by exactly one per reading across restarts. A floor kept beside the
   database (`<path>.seq`, written ahead in steps of SEQ_RESERVE) keeps seqs from going back
   even when a corrupt database had to be replaced: the platform then sees an honest gap.
3. Deleted only on acknowledgement or eviction. Rows leave through `ack`/`ack_later` (the
   broker acknowledged them) or through eviction (agent.queue_bounds), which is counted in
   `meta.evicted`, logged once per episode, and reported in `stats()`. Nothing else deletes.
4. Bounded. Used bytes stay under `max_bytes`, rows under `max_age`, and the disk keeps
   `min_free` bytes free; past a bound the oldest rows are evicted first. A full disk
   (SQLITE_FULL) evicts and retries; a locked database (a technician's sqlite3 shell) is waited
   for `busy_timeout`. Readings that still cannot be written wait in a bounded memory buffer
   (`MAX_PENDING`) and are written first by the next `put()`; overflow is counted as dropped.
5. Ordered, and memory does not grow with the backlog. `take_rows()` reads a bounded window in
   seq order through the primary key; the live stream (`take_live()`) is served from the rows
   of the last commits kept in memory, exactly as stored (at most 2 x TAIL, forgotten at any
   eviction or recovery); counters live in `meta`; nothing scans the whole backlog on a hot
   path.
6. Self-healing. A file that is not a database or is corrupt, at open or later, is renamed
   `<path>.corrupt-<UTC time>` (with its -wal/-shm), logged, and replaced by a fresh queue.

Two connections: the writer's, guarded by a lock (puts, deletes, bounds), and the reader's
(agent.queue_read: windows and counters), which in WAL mode never waits for a commit.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Literal

from agent.core import log
from agent.core.clock import boot_id, current
from agent.core.errors import QueueError
from agent.core.model import QueuedReading, Reading, Row
from agent.queue.bounds import EVICTION_QUIET, Bounds, Limits
from agent.queue.commit import GroupCommit, Ticket, Write
from agent.queue.reader import CORRUPT, Reader

__all__ = ["Limits", "Queue", "QueueStats"]

SEQ_RESERVE = 100_000
MAX_PENDING = 100_000
GATHER = 0.005
"""Seconds the background committer lets submitted polls gather after the first one before it
commits them all in one transaction (one sync): a device polled back to back pays for one
commit per ~5 ms, not one per poll; a poll at its interval is durable ~5 ms later."""
TAIL = 2_000
"""Newest committed rows kept in memory for the live stream (take_live); rows the forwarder
took are let go. Up to 2 x TAIL rows (~1 MB) before the oldest are dropped."""
MAX_ACKED = 10_000  # acknowledged seq spans kept for deletion while the database refuses
_CORRUPT = CORRUPT
_FULL = 13  # SQLITE_FULL
_SCHEMA = """
BEGIN;
CREATE TABLE IF NOT EXISTS readings (
    seq     INTEGER PRIMARY KEY,  -- from meta.next_seq, never reused
    device  TEXT NOT NULL,
    metric  TEXT NOT NULL,
    value   TEXT NOT NULL,        -- JSON: keeps bool/int/float/str/null apart
    unit    TEXT,
    ts      INTEGER NOT NULL,     -- UTC epoch ms at poll time
    quality TEXT NOT NULL,
    unsynced TEXT                 -- NULL, or "boot:offset" when the clock was not synchronized
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('depth', (SELECT count(*) FROM readings));
INSERT OR IGNORE INTO meta VALUES ('evicted', 0);
INSERT OR IGNORE INTO meta VALUES ('dropped', 0);
INSERT OR IGNORE INTO meta VALUES ('next_seq', {next_seq:d});
COMMIT;
"""


_DELETE_SPAN = "DELETE FROM readings WHERE seq BETWEEN ? AND ?"
_COUNT = ("UPDATE meta SET value = CASE key WHEN 'next_seq' THEN ?1 WHEN 'depth' THEN value + ?2"
          " ELSE value + ?3 END WHERE key IN ('next_seq', 'depth', 'dropped')")
_CHUNKS = (256, 64, 16, 4, 1)  # rows per INSERT statement: a few cached statement shapes


@functools.cache
def _insert_sql(rows: int, tagged: bool, first: bool = False) -> str:
    """INSERT of `rows` rows: (seq, device, metric, value, unit, ts, quality, unsynced), with
    seq bound (`first`) or NULL (the next one), unsynced bound (`tagged`) or NULL."""
    one = f"({'?' if first else 'NULL'}, ?, ?, ?, ?, ?, ?, {'?' if tagged else 'NULL'})"
    return "INSERT INTO readings VALUES " + ", ".join([one] * rows)


@dataclass(frozen=True, slots=True)
class QueueStats:
    """What is waiting and what the queue had to give up."""

    depth: int
    oldest_ts: int | None
    next_seq: int
    bytes: int  # used by rows and indexes
    evicted: int  # readings deleted unsent because a bound was reached (persistent count)
    dropped: int  # readings never written: disk full or locked beyond the memory buffer
    pending: int  # readings waiting in memory for the database to accept them
    moved_aside: tuple[str, ...] = field(default_factory=tuple)  # corrupt files set aside


class Queue(Bounds):
    """The SQLite queue at `path` (created with its directory if missing)."""

    def __init__(self, path: str | Path, synchronous: Literal["full", "normal"] = "full",
                 limits: Limits | None = None, on_put: Callable[[], None] | None = None,
                 busy_timeout: float = 5.0, check_every: float = 1.0) -> None:
        self.path = Path(path)
        self.limits = limits or Limits()
        self._sync = synchronous
        self._busy_timeout = busy_timeout
        self._on_put = on_put
        self._lock = threading.RLock()
        self._group: GroupCommit[Reading] = GroupCommit(self._commit, gather=GATHER)  # see put()
        self._pending: list[Reading] = []
        self._dropped_unsaved = 0
        self._moved_aside: list[str] = []
        self._seq_floor = 0
        self._last_check = -check_every
        self._last_eviction = -EVICTION_QUIET
        self._check_every = check_every
        self._log = log.get("queue")
        self._full_ep = log.Episode(self._log, "queue full, evicting oldest readings",
                                    "queue within bounds")
        self._write_ep = log.Episode(self._log, "queue write failed, holding readings in memory",
                                     "queue writable again")
        self._acked: list[tuple[int, int]] = []  # seq spans acknowledged, not yet deleted
        self._acked_lock = threading.Lock()
        self._ack_ep = log.Episode(self._log, "acknowledged readings not deleted, retrying",
                                   "acknowledged readings deleted")
        self._generation = 0  # files opened: the reader reopens when it grew
        self._tail: list[Row] = []  # the newest committed rows, contiguous seqs (take_live)
        self._tail_lock = threading.Lock()
        self._db = self._open()
        self._reader = Reader(self.path, busy_timeout, self._reader_corrupt,
                              lambda: self._generation)
        with contextlib.suppress(sqlite3.DatabaseError):  # bounds may have shrunk since
            self._enforce_limits(force=True)

    # opening and healing
    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise QueueError(f"cannot open queue {self.path}: {exc}") from exc
        self._generation += 1
        for attempt in (1, 2):
            try:
                return self._connect()
            except sqlite3.DatabaseError as exc:
                if attempt == 1 and _code(exc) in _CORRUPT:
                    self._move_aside(exc)
                    continue
                raise QueueError(f"cannot open queue {self.path}: {_describe(exc)}") from exc
        raise AssertionError("unreachable")

    def _connect(self) -> sqlite3.Connection:
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                             timeout=self._busy_timeout)
        try:
            if fresh:  # must precede the first table: lets eviction give disk space back
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._sync.upper()}")
            db.execute("PRAGMA journal_size_limit=67108864")
            floor = self._read_floor()
            db.executescript(_SCHEMA.format(next_seq=max(1, floor)))  # atomic: one transaction
            columns = {row[1] for row in db.execute("PRAGMA table_info(readings)")}
            if "unsynced" not in columns:  # a queue written by 0.1.0
                db.execute("ALTER TABLE readings ADD COLUMN unsynced TEXT")
        except BaseException:
            db.close()
            raise
        self._seq_floor = floor
        return db

    def _move_aside(self, exc: sqlite3.DatabaseError) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                os.replace(src, f"{target}{suffix}")
        self._moved_aside.append(str(target))
        self._log.error("queue file corrupt, moved aside; starting a fresh queue",
                        error=_describe(exc), moved_to=str(target))

    def _recover(self, exc: sqlite3.DatabaseError) -> None:
        """A corruption found while running: set the file aside and continue on a fresh one."""
        self._forget_tail()
        with self._lock:
            self._db.close()
            self._move_aside(exc)
            self._db = self._open()
        with contextlib.suppress(sqlite3.DatabaseError):  # bounds may have shrunk since
            self._enforce_limits(force=True)

    def _reader_corrupt(self, exc: sqlite3.DatabaseError, generation: int) -> None:
        """The reader found the file corrupt: heal, unless that file was replaced already."""
        with self._lock:
            if generation == self._generation:
                self._recover(exc)

    # the seq floor beside the database
    def _floor_path(self) -> Path:
        return self.path.with_name(self.path.name + ".seq")

    def _read_floor(self) -> int:
        try:
            return int(self._floor_path().read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def _raise_floor(self, upto: int) -> None:
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

    # writing
    def set_listener(self, on_put: Callable[[], None] | None) -> None:
        """Call `on_put()` after every committed put (the forwarder's wake-up)."""
        self._on_put = on_put

    def put(self, readings: Sequence[Reading]) -> list[int]:
        """Store one poll's readings in one transaction; returns the seqs written.

        Readings held in memory from an earlier failed put are written first. If the database
        cannot take them (disk full after eviction, locked), they are held too and [] returned.

        Group commit (agent.commit): polls that finish while another put is committing wait
        for it, then go into the next transaction together (one fsync for all of them, in
        arrival order). Each put still returns only once its own readings are committed, or
        held.
        """
        return self._group.put(readings)

    def submit(self, readings: Sequence[Reading],
               done: Callable[[Write[Reading]], None] | None = None) -> Ticket[Reading]:
        """Like `put`, committed by a background thread: returns at once (unless 1,000
        submitted readings are still waiting), and `done(ticket)` runs once they are committed
        (`ticket.seqs`) or failed (`ticket.error`). A poll thread goes back to its devices
        while the disk syncs; `close()` commits what was submitted first."""
        return self._group.submit(readings, done)

    def flush(self) -> None:
        """Commit what was submitted and delete what was acknowledged (`ack_later`); returns
        once done, so that `stats()` counts only what is really still to send."""
        self._group.put([])

    def _commit(self, group: list[Write[Reading]]) -> None:
        """Write the held readings and every put of `group`, and delete what was acknowledged
        since the last commit (`ack_later`), in one transaction."""
        committed = False
        try:
            with self._lock:
                with self._acked_lock:
                    spans, self._acked = _merge(self._acked), []
                held = len(self._pending)
                batch = self._pending + [r for p in group for r in p.items]
                if not batch:
                    for p in group:
                        p.seqs = []
                    self._delete_acked(spans)
                    return
                while True:
                    try:
                        first = self._insert_evicting(batch, spans)
                        break
                    except sqlite3.DatabaseError as exc:
                        if _code(exc) in _CORRUPT:
                            self._recover(exc)
                            spans = []  # a fresh file: nothing left to delete
                            continue
                        self._hold(batch, exc)
                        self._delete_acked(spans)  # on their own: a delete may still go
                        for p in group:
                            p.seqs = []
                        return
                self._pending = []
                self._write_ep.recovered()
                if spans:
                    self._ack_ep.recovered()
                start = first
                for i, p in enumerate(group):
                    n = len(p.items) + (held if i == 0 else 0)  # the held went first
                    p.seqs = list(range(start, start + n))
                    start += n
                committed = True
                try:
                    self._enforce_limits()
                except sqlite3.DatabaseError as exc:  # next put tries again
                    self._log.warning("queue bounds check failed", error=_describe(exc))
        finally:
            if committed and self._on_put is not None:
                self._on_put()

    def _hold(self, batch: list[Reading], exc: sqlite3.DatabaseError) -> None:
        overflow = max(0, len(batch) - MAX_PENDING)
        self._pending = batch[overflow:]
        self._dropped_unsaved += overflow  # saved with the next successful insert
        self._write_ep.failed(_describe(exc), held=len(self._pending), dropped=overflow)

    def _insert_evicting(self, batch: list[Reading], spans: list[tuple[int, int]]) -> int:
        try:
            return self._insert(batch, spans)
        except sqlite3.OperationalError as exc:
            if _code(exc) != _FULL:
                raise
            self._make_room(max(len(batch), self._depth() // 20, 1000))
            return self._insert(batch, spans)

    def _insert(self, batch: list[Reading], spans: Sequence[tuple[int, int]] = ()) -> int:
        clock = current()
        tag = None if clock.synced() else f"{boot_id()}:{clock.now_ms() - clock.mono_ms()}"
        rows = list(map(_row, batch))
        self._db.execute("BEGIN IMMEDIATE")
        try:
            (first,) = self._db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
            self._raise_floor(first + len(rows))
            last = self._insert_rows(first, rows, tag)
            if last != first + len(rows) - 1:
                raise sqlite3.IntegrityError(f"seqs not consecutive: {first}..{last} for "
                                             f"{len(rows)} readings (meta.next_seq behind?)")
            deleted = 0
            if spans:  # acknowledged since the last commit (ack_later)
                before = self._db.total_changes
                self._db.executemany(_DELETE_SPAN, spans)
                deleted = self._db.total_changes - before
            self._db.execute(_COUNT, (first + len(rows), len(rows) - deleted,
                                      self._dropped_unsaved))
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._dropped_unsaved = 0
        self._remember(first, rows, tag)
        return int(first)

    def _insert_rows(self, first: int, rows: list[tuple[Any, ...]], tag: str | None) -> int:
        """Insert `rows` as seqs first, first + 1, ...: the first row takes `first`, the others
        a NULL seq, which SQLite makes max(seq) + 1 since every stored seq is below next_seq
        (returns the last; the caller checks it). Rows go many per statement (multi-row VALUES,
        in chunks of cached sizes): each statement is one step, and each step lets go of the
        GIL, which a busy thread then holds for up to 5 ms before this one gets it back; per
        row, as executemany does it, that made a commit take up to 100x longer beside busy
        polls."""
        if tag is not None:
            rows = [(*row, tag) for row in rows]
        cur = self._db.execute(_insert_sql(1, tag is not None, first=True), (first, *rows[0]))
        i, n = 1, len(rows)
        while i < n:
            size = next(c for c in _CHUNKS if c <= n - i)
            cur = self._db.execute(_insert_sql(size, tag is not None),
                                   list(chain.from_iterable(rows[i:i + size])))
            i += size
        return int(cur.lastrowid or 0)

    # reading and acknowledging
    def take_rows(self, after_seq: int, limit: int, before_seq: int | None = None) -> list[Row]:
        """Up to `limit` rows with after_seq < seq (< before_seq), oldest first, as stored
        (committed ones: read on the reader's own connection, see agent.queue_read)."""
        return self._reader.take_rows(after_seq, limit, before_seq)

    def take_live(self, after_seq: int, limit: int) -> list[Row]:
        """`take_rows(after_seq, limit)` for the forwarder's live stream: the newest committed
        rows are kept in memory (up to TAIL of them, exactly as stored), so readings that were
        just committed are sent without reading them back from the file; a window that starts
        before the kept rows (the forwarder fell behind, was offline or rewound) is read from
        the file. Rows before `after_seq` are let go: the caller has sent them."""
        with self._tail_lock:
            tail = self._tail
            if tail and tail[0][0] <= after_seq + 1 <= tail[-1][0] + 1:
                del tail[:after_seq + 1 - tail[0][0]]  # taken before: the caller moved on
                return tail[:limit]
        return self._reader.take_rows(after_seq, limit)

    def _remember(self, first: int, rows: list[tuple[Any, ...]], tag: str | None) -> None:
        """Keep the rows just committed as seqs first.. for take_live (bounded, newest)."""
        kept: list[Row] = [(first + i, *row, tag) for i, row in enumerate(rows)]
        with self._tail_lock:
            if self._tail and self._tail[-1][0] + 1 != first:
                self._tail = []  # not contiguous (a fresh file): start again
            self._tail.extend(kept)
            if len(self._tail) > 2 * TAIL:
                del self._tail[:-TAIL]

    def _forget_tail(self) -> None:
        with self._tail_lock:
            self._tail = []

    def take(self, after_seq: int, limit: int,
             before_seq: int | None = None) -> list[QueuedReading]:
        """Like `take_rows`, as `QueuedReading`s with their values decoded."""
        return [QueuedReading(seq, Reading(device, metric, json.loads(value), unit, ts, quality))
                for seq, device, metric, value, unit, ts, quality, _
                in self.take_rows(after_seq, limit, before_seq)]

    def ack(self, seqs: Iterable[int]) -> int:
        """Delete the rows the broker acknowledged, in one transaction; returns rows deleted."""
        spans = _spans(seqs)
        if not spans:
            return 0
        with self._lock:
            try:
                with self._relaxed():
                    return self._delete(_DELETE_SPAN, spans, None)
            except sqlite3.DatabaseError as exc:
                if _code(exc) in _CORRUPT:
                    self._recover(exc)
                    return 0
                raise QueueError(f"cannot delete from queue {self.path}: {_describe(exc)}") from exc

    def ack_later(self, seqs: Iterable[int]) -> Ticket[Reading] | None:
        """Like `ack`, but the rows are deleted by the background committer, in the same
        transaction as the next poll's readings (one sync for both), and this returns at
        once: the forwarder does not wait for the disk. Until the ticket is done the rows are
        still there for `take_*`; a caller that reads from the start again must wait for it."""
        spans = _spans(seqs)
        if not spans:
            return None
        with self._acked_lock:
            self._acked.extend(spans)
        try:
            return self._group.submit([])  # wakes the committer even if no poll comes
        except QueueError:  # closing: delete now
            with self._lock:
                with self._acked_lock:
                    spans, self._acked = _merge(self._acked), []
                self._delete_acked(spans)  # which takes _acked_lock again if it must keep them
            return None

    def _delete_acked(self, spans: list[tuple[int, int]]) -> None:
        """Delete acknowledged spans in their own transaction (under the write lock); if the
        database refuses, keep them for the next commit (rows still there are sent again
        after a restart: a duplicate, never a loss)."""
        if not spans:
            return
        try:
            with self._relaxed():
                self._delete(_DELETE_SPAN, spans, None)
            self._ack_ep.recovered()
        except sqlite3.DatabaseError as exc:
            if _code(exc) in _CORRUPT:
                self._recover(exc)
                return
            with self._acked_lock:
                self._acked[:0] = spans[-MAX_ACKED:]
            self._ack_ep.failed(_describe(exc), spans=len(spans))

    def stats(self) -> QueueStats:
        """Counters and the oldest reading, as last committed, without scanning the backlog."""
        c = self._reader.counters()
        return QueueStats(
            depth=c.depth, oldest_ts=c.oldest_ts, next_seq=c.next_seq, bytes=c.bytes,
            evicted=c.evicted, dropped=c.dropped + self._dropped_unsaved,
            pending=len(self._pending), moved_aside=tuple(self._moved_aside))

    def _delete(self, sql: str, params: list[tuple[int, int]] | tuple[object, ...],
                counter: str | None) -> int:
        """Delete in one transaction, keeping `depth` (and `counter`) exact; sqlite errors pass."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            before = self._db.total_changes
            if isinstance(params, list):
                self._db.executemany(sql, params)
            else:
                self._db.execute(sql, params)
            deleted = self._db.total_changes - before
            self._db.execute("UPDATE meta SET value = value - ? WHERE key = 'depth'", (deleted,))
            if counter:
                self._db.execute("UPDATE meta SET value = value + ? WHERE key = ?",
                                 (deleted, counter))
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        return deleted

    @contextlib.contextmanager
    def _relaxed(self) -> Iterator[None]:
        """Commit without waiting for the disk (an acknowledgement's delete): in WAL the next
        synced commit (a put) or checkpoint makes it durable along with everything before it.
        A power cut in between only brings acknowledged rows back, to be sent again under the
        same seqs: a duplicate, never a loss."""
        if self._sync != "full":
            yield
            return
        self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            self._db.execute("PRAGMA synchronous=FULL")

    def _rollback(self) -> None:
        """Roll back if a transaction is still open (SQLite ends some on its own, e.g. on FULL)."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def close(self) -> None:
        """Commit what was submitted, checkpoint the WAL and close; idempotent."""
        self._group.close()
        self._reader.close()
        with self._lock:
            try:
                with self._acked_lock:
                    spans, self._acked = self._acked, []
                self._delete_acked(spans)
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._db.close()
            except sqlite3.ProgrammingError:
                pass  # already closed
            except sqlite3.Error as exc:
                raise QueueError(f"cannot close queue {self.path}: {_describe(exc)}") from exc


def _row(r: Reading) -> tuple[str, str, str, str | None, int, str]:
    """A reading as stored. JSON has no NaN/inf: such a value is stored as null, quality
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


def _spans(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Seqs as (first, last) runs of consecutive numbers: one DELETE per run, not per row."""
    return _merge([(s, s) for s in seqs])


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans acknowledged message by message, merged into as few runs as possible: a backlog
    of interleaved devices is acknowledged one device's message at a time (every 4th seq),
    and together the messages of a window cover one run, one DELETE."""
    merged: list[tuple[int, int]] = []
    for first, last in sorted(spans):
        if merged and first <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


def _code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", -1)) & 0xFF


def _describe(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", "")
    text = str(exc)
    if name == "SQLITE_BUSY" or "locked" in text:
        return f"{text} (another process holds a lock on the queue, e.g. an open sqlite3 shell)"
    return f"{text} ({name})" if name else text
