"""`Queue`: the queue's one face, and its writer.

`Queue` owns the write connection and its lock, the group committer (agent.queue.commit), the
readings held in memory while the database refuses them, the acknowledged seqs waiting to be
deleted, and the transactions that insert and delete rows; it composes the file
(agent.queue.files), the bounds (agent.queue.bounds), the reader (agent.queue.reader) and the
live tail (agent.queue.tail). Its public methods are the package's face (see
agent/queue/__init__.py, which also states the invariants they keep); everything else is
private. Two connections: the writer's, guarded by the lock (puts, deletes, bounds), and the
reader's (windows and counters), which in WAL mode never waits for a commit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any, Literal

from agent.core import log
from agent.core.clock import boot_id, current
from agent.core.errors import QueueError
from agent.core.model import QueuedReading, Reading, Row
from agent.queue import schema
from agent.queue.bounds import Bounds, Limits
from agent.queue.commit import GroupCommit, Write
from agent.queue.drops import EVENT as DROPPED
from agent.queue.drops import Drops
from agent.queue.files import CORRUPT, FULL, READ_ONLY, QueueFile, code, describe
from agent.queue.reader import Reader
from agent.queue.receipt import Receipt
from agent.queue.tail import Tail

__all__ = ["Limits", "Queue", "QueueStats", "Receipt"]

MAX_PENDING = 100_000
GATHER = 0.005
"""Seconds the background committer lets submitted polls gather after the first one before it
commits them all in one transaction (one sync): a device polled back to back pays for one
commit per ~5 ms, not one per poll; a poll at its interval is durable ~5 ms later."""
MAX_ACKED = 10_000  # acknowledged seq spans kept for deletion while the database refuses
CLOSE_WAIT = 10.0
"""Seconds `close()` waits for a disk that does not answer before it counts what it still holds
as dropped (systemd's stop timeout is 30 s: after it, a SIGKILL would leave no count at all)."""
_CHUNKS = (256, 64, 16, 4, 1)  # rows per INSERT statement: a few cached statement shapes


@dataclass(frozen=True, slots=True)
class QueueStats:
    """What is waiting and what the queue had to give up."""

    depth: int
    oldest_ts: int | None
    next_seq: int
    bytes: int  # used by rows and indexes (agent.queue.schema.USED_BYTES)
    evicted: int  # readings deleted unsent because a bound was reached (persistent count)
    dropped: int  # readings never written: the memory buffer full, or still held at close
    pending: int  # readings waiting in memory for the database to accept them
    moved_aside: tuple[str, ...] = field(default_factory=tuple)  # corrupt files set aside
    lost: int = 0  # committed readings gone with the file's past: WAL removed, old copy


class Queue:
    """The SQLite queue at `path` (created with its directory if missing)."""

    def __init__(self, path: str | Path, synchronous: Literal["full", "normal"] = "full",
                 limits: Limits | None = None, on_put: Callable[[], None] | None = None,
                 busy_timeout: float = 5.0, check_every: float = 1.0) -> None:
        self.path = Path(path)
        self.limits = limits or Limits()
        self._sync = synchronous
        self._on_put = on_put
        self._lock = threading.RLock()
        self._group: GroupCommit[Reading] = GroupCommit(self._commit, gather=GATHER)  # see put()
        self._pending: list[Reading] = []
        self._log = log.get("queue")
        self._drops = Drops(self._log)  # readings given up, until meta.dropped has them
        self._unwritable: str | None = None  # why the last write failed (None: it did not)
        self._final: QueueStats | None = None  # the counters at close
        self._write_ep = log.Episode(self._log, "queue write failed, holding readings in memory",
                                     "queue writable again")
        self._acked: list[tuple[int, int]] = []  # seq spans acknowledged, not yet deleted
        self._acked_lock = threading.Lock()
        self._ack_ep = log.Episode(self._log, "acknowledged readings not deleted, retrying",
                                   "acknowledged readings deleted")
        self._tail = Tail()  # the newest committed rows (take(live=True))
        self._file = QueueFile(self.path, synchronous, busy_timeout)
        self._db = self._file.open()
        self._bounds = Bounds(self.path, self.limits, lambda: self._db, self._evict, check_every)
        self._reader = Reader(self.path, busy_timeout, self._reader_corrupt,
                              lambda: self._file.generation, lambda: self._file.mark.values)
        with contextlib.suppress(sqlite3.DatabaseError):  # bounds may have shrunk since
            self._bounds.enforce(force=True)
        with contextlib.suppress(QueueError):  # known counters from the start (see stats())
            self._reader.counters()

    # the face: writing
    def set_listener(self, on_put: Callable[[], None] | None) -> None:
        """Call `on_put()` after every committed put (the forwarder's wake-up)."""
        self._on_put = on_put

    def put(self, readings: Sequence[Reading]) -> list[int]:
        """Store one poll's readings in one transaction; returns the seqs written.

        Readings held in memory from an earlier failed put are written first. If the database
        cannot take them (disk full after eviction, locked), they are held too and [] returned.

        Group commit (agent.queue.commit): polls that finish while another put is committing
        wait for it, then go into the next transaction together (one fsync for all of them, in
        arrival order). Each put still returns only once its own readings are committed, or
        held.
        """
        return self._group.put(readings)

    def submit(self, readings: Sequence[Reading],
               done: Callable[[Receipt], None] | None = None) -> Receipt:
        """Like `put`, committed by a background thread: returns at once (unless 1,000
        submitted readings are still waiting and the disk has not stalled), and
        `done(receipt)` runs once they are committed (`receipt.seqs`) or failed
        (`receipt.error`). A poll thread goes back to its devices while the disk syncs;
        `close()` commits what was submitted first. While a commit is stuck (a disk that
        stopped answering) polls wait in memory, MAX_PENDING readings at most with those held;
        past that a poll is dropped: counted, logged, and failed with `receipt.error`."""
        room = MAX_PENDING - len(self._pending)
        write: Receipt | None = self._group.submit(readings, done, limit=room)
        if write is not None:
            return write
        self._drops.add(len(readings), f"disk not responding (a commit waiting for over "
                                       f"{self._group.stall:g} s), memory buffer full")
        failed = Receipt.completed()
        failed.count, failed.error = len(readings), QueueError("queue memory buffer full")
        if done is not None:
            done(failed)
        return failed

    def flush(self) -> None:
        """Commit what was submitted and delete what was acknowledged (`ack`); returns once
        done, so that `stats()` counts only what is really still to send."""
        self._group.put([])

    # the face: reading and acknowledging
    def take(self, after_seq: int, limit: int, before_seq: int | None = None, *,
             live: bool = False) -> list[Row]:
        """Up to `limit` rows with after_seq < seq (< before_seq), oldest first, as stored.

        The forwarder's windows. Backlog (`before_seq` given) is read from the file on the
        reader's own connection. `live=True` is the live stream: the newest committed rows
        are kept in memory (exactly as stored), so readings just committed are sent without
        reading them back; a window that starts before the kept rows (the forwarder fell
        behind, was offline or rewound) is read from the file. Rows before `after_seq` are
        then let go: the caller has sent them.
        """
        if live:
            if before_seq is not None:
                raise ValueError("the live stream has no upper bound")
            rows = self._tail.window(after_seq, limit)
            if rows is not None:
                return rows
        return self._reader.take_rows(after_seq, limit, before_seq)

    def ack(self, seqs: Iterable[int]) -> Receipt:
        """The broker acknowledged `seqs`: their rows are deleted by the background committer,
        in the same transaction as the next poll's readings (one sync for both), and this
        returns at once (the forwarder does not wait for the disk). Until the receipt is
        committed the rows are still there for `take`; a caller that reads from the start
        again must wait for it. Once the queue is closing they are deleted at once."""
        spans = _spans(seqs)
        if not spans:
            return Receipt.completed()
        with self._acked_lock:
            self._acked.extend(spans)
        try:
            return self._group.submit([])  # wakes the committer even if no poll comes
        except QueueError:  # closing: delete now
            with self._lock:
                with self._acked_lock:
                    spans, self._acked = _merge(self._acked), []
                self._delete_acked(spans)  # which takes _acked_lock again if it must keep them
            return Receipt.completed()

    def discard(self, seqs: Iterable[int], why: str) -> int:
        """Delete readings that can never be delivered (larger than any message the broker
        takes), counted as dropped and logged with `why`: they are not retried for ever."""
        n = self.ack_now(seqs)
        self._drops.add(n, why, log=False)  # saved in meta.dropped with the next commit
        self._log.error("readings dropped: they can never be delivered", count=n, why=why)
        return n

    def ack_now(self, seqs: Iterable[int]) -> int:
        """Like `ack`, deleted in a transaction of its own before this returns (`edge-agent
        queue export --delete`); returns the rows deleted."""
        spans = _spans(seqs)
        if not spans:
            return 0
        with self._lock:
            try:
                with self._relaxed():
                    return self._delete(schema.DELETE_SPAN, spans, None)
            except sqlite3.DatabaseError as exc:
                if code(exc) in CORRUPT:
                    self._recover(exc)
                    return 0
                raise QueueError(f"cannot delete from queue {self.path}: {describe(exc)}") from exc

    def stats(self) -> QueueStats:
        """Counters and the oldest reading, as last committed, without scanning the backlog;
        after `close()`, as they were then. A read the disk holds up (frozen) does not hold up
        the caller: the last counters read are returned then (agent.queue.reader); what is
        dropped and pending is counted in memory, always current."""
        if self._final is not None:
            return self._final
        c = self._reader.counters()
        return QueueStats(
            depth=c.depth, oldest_ts=c.oldest_ts, next_seq=c.next_seq, bytes=c.bytes,
            evicted=c.evicted, dropped=c.dropped + self._drops.unsaved,
            pending=len(self._pending) + self._group.waiting(),
            moved_aside=tuple(self._file.moved_aside), lost=c.lost)

    def peek(self, after_seq: int, limit: int,
             before_seq: int | None = None) -> list[QueuedReading]:
        """The rows of `take` (from the file) as `QueuedReading`s with their values decoded:
        for tools and tests, not the hot path."""
        return [QueuedReading(seq, Reading(device, metric, json.loads(value), unit, ts, quality))
                for seq, device, metric, value, unit, ts, quality, _
                in self._reader.take_rows(after_seq, limit, before_seq)]

    def close(self) -> None:
        """Commit what was submitted, checkpoint the WAL and close; idempotent; never raises.

        What cannot be written by then (held readings, tried once more, on a read-only disk;
        everything in memory when the disk has not answered for CLOSE_WAIT s) is counted as
        dropped and logged with the cause. The count goes into the file if the file still
        takes it; else it is in the log line (`saved: false`) and in `stats()` only."""
        if self._final is not None:
            return
        if not self._group.close(CLOSE_WAIT):  # the committer is stuck in the disk, locked
            self._give_up()
            return
        with self._lock:
            if self._pending:
                self._commit([])  # one last try
            held, self._pending = len(self._pending), []
            with self._acked_lock:
                spans, self._acked = self._acked, []
            self._delete_acked(spans)
            self._drops.flush()
            self._drops.add(held, self._unwritable or "", log=False)
            saved = self._save_dropped()
            if held:
                self._log.error(DROPPED, count=held, cause=self._unwritable, saved=saved,
                                dropped_total=self._drops.total)
            elif not saved:
                self._log.error("queue dropped count not saved in the file",
                                count=self._drops.unsaved, cause=self._unwritable)
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                self._log.warning("queue not checkpointed at close", error=describe(exc))
        self._final = self._last_stats()
        self._reader.close()
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.close()
            self._file.mark.close()

    def _give_up(self) -> None:
        """Close while a commit is stuck in a disk that does not answer: what is still in
        memory is counted as dropped (if the disk comes back before the process ends, the
        stuck commit may still write some of it: a reading counted that arrives, never one
        lost without a count). The write lock is the stuck commit's: the file is left as is."""
        n = self._group.abandon() + len(self._pending)
        self._drops.flush()
        self._drops.add(n, "", log=False)
        self._log.error(DROPPED, count=n, saved=False, dropped_total=self._drops.total,
                        cause=f"disk not responding: nothing committed for {CLOSE_WAIT:g} s")
        self._final = self._last_stats()
        self._reader.close(wait=1.0)

    def _last_stats(self) -> QueueStats:
        """stats() for the close: nothing is pending any more (it was written or counted as
        dropped), everything else as it stands."""
        try:
            return dataclasses.replace(self.stats(), pending=0)
        except QueueError:  # the file could not even be read: only what memory knows
            v = self._file.mark.values
            return QueueStats(v[schema.DEPTH], None, v[schema.NEXT_SEQ], 0, v[schema.EVICTED],
                              v[schema.DROPPED] + self._drops.unsaved, 0,
                              tuple(self._file.moved_aside), v[schema.LOST])

    def _save_dropped(self) -> bool:
        """Add the dropped readings not yet counted in the file to `meta.dropped`; False if the
        file does not take it."""
        n = self._drops.take()
        if not n:
            return True
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(schema.ADD_TO_META, (n, schema.DROPPED))
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except sqlite3.Error:
            return False
        self._file.mark.add(dropped=n)
        self._drops.saved(n)
        return True

    # committing
    def _commit(self, group: list[Write[Reading]]) -> None:
        """Write the held readings and every put of `group`, and delete what was acknowledged
        since the last commit (`ack`), in one transaction."""
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
                        if self._unwritable == READ_ONLY and self._file.read_only():
                            raise OSError(errno.EROFS, READ_ONLY)  # not worth the inserts
                        first = self._insert_evicting(batch, spans)
                        break
                    except (sqlite3.DatabaseError, OSError) as exc:
                        if isinstance(exc, sqlite3.DatabaseError) and code(exc) in CORRUPT:
                            self._recover(exc)
                            spans = []  # a fresh file: nothing left to delete
                            continue
                        self._hold(batch, exc)
                        self._delete_acked(spans)  # on their own: a delete may still go
                        for p in group:
                            p.seqs = []
                        return
                self._pending = []
                self._unwritable = None
                self._write_ep.recovered()
                self._drops.ended()
                if spans:
                    self._ack_ep.recovered()
                start = first
                for i, p in enumerate(group):
                    n = len(p.items) + (held if i == 0 else 0)  # the held went first
                    p.seqs = list(range(start, start + n))
                    start += n
                committed = True
                try:
                    self._bounds.enforce()
                except sqlite3.DatabaseError as exc:  # next put tries again
                    self._log.warning("queue bounds check failed", error=describe(exc))
        finally:
            if committed and self._on_put is not None:
                self._on_put()

    def _hold(self, batch: list[Reading], exc: sqlite3.DatabaseError | OSError) -> None:
        """The database refused `batch`: keep it in memory to write first next time, up to
        MAX_PENDING readings (the oldest beyond it are dropped: counted and logged)."""
        overflow = max(0, len(batch) - MAX_PENDING)
        self._pending = batch[overflow:]
        self._unwritable = cause = self._file.cause(exc)
        self._drops.add(overflow, cause)  # saved with the next successful insert
        self._write_ep.failed(cause, held=len(self._pending), dropped=overflow)

    def _insert_evicting(self, batch: list[Reading], spans: list[tuple[int, int]]) -> int:
        try:
            return self._insert(batch, spans)
        except sqlite3.OperationalError as exc:
            if code(exc) != FULL:
                raise
            self._bounds.make_room(len(batch))
            return self._insert(batch, spans)

    def _insert(self, batch: list[Reading], spans: Sequence[tuple[int, int]] = ()) -> int:
        clock = current()
        tag = None if clock.synced() else f"{boot_id()}:{clock.now_ms() - clock.mono_ms()}"
        rows = list(map(schema.as_stored, batch))
        self._db.execute("BEGIN IMMEDIATE")
        try:
            (first,) = self._db.execute(schema.META_VALUE, (schema.NEXT_SEQ,)).fetchone()
            self._file.raise_floor(first + len(rows))
            last = self._insert_rows(first, rows, tag)
            if last != first + len(rows) - 1:
                raise sqlite3.IntegrityError(f"seqs not consecutive: {first}..{last} for "
                                             f"{len(rows)} readings (meta.next_seq behind?)")
            deleted = 0
            if spans:  # acknowledged since the last commit (ack)
                before = self._db.total_changes
                self._db.executemany(schema.DELETE_SPAN, spans)
                deleted = self._db.total_changes - before
            dropped = self._drops.take()
            self._db.execute(schema.COUNT_INSERT, (first + len(rows), len(rows) - deleted,
                                                   dropped))
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        # the mark, right after the commit and before anything is sent (agent.queue.mark)
        self._file.mark.add(next_seq=first + len(rows), depth=len(rows) - deleted,
                            dropped=dropped)
        self._drops.saved(dropped)
        self._tail.remember(first, rows, tag)
        return int(first)

    def _insert_rows(self, first: int, rows: list[tuple[Any, ...]], tag: str | None) -> int:
        """Insert `rows` as seqs first, first + 1, ...: the first row takes `first`, the others
        a NULL seq, which SQLite makes max(seq) + 1 since every stored seq is below next_seq
        (returns the last; the caller checks it). Rows go many per statement (multi-row VALUES,
        in chunks of cached sizes): each statement is one step, and each step lets go of the
        GIL, which a busy thread then holds for up to a switch interval (5 ms) before this one
        gets it back; one step per row, as executemany does it, would make a commit beside
        busy polls wait for the GIL once per row."""
        if tag is not None:
            rows = [(*row, tag) for row in rows]
        cur = self._db.execute(schema.insert_sql(1, tag is not None, first=True),
                               (first, *rows[0]))
        i, n = 1, len(rows)
        while i < n:
            size = next(c for c in _CHUNKS if c <= n - i)
            cur = self._db.execute(schema.insert_sql(size, tag is not None),
                                   list(chain.from_iterable(rows[i:i + size])))
            i += size
        return int(cur.lastrowid or 0)

    # deleting
    def _delete_acked(self, spans: list[tuple[int, int]]) -> None:
        """Delete acknowledged spans in their own transaction (under the write lock); if the
        database refuses, keep them for the next commit (rows still there are sent again
        after a restart: a duplicate, never a loss)."""
        if not spans:
            return
        try:
            with self._relaxed():
                self._delete(schema.DELETE_SPAN, spans, None)
            self._ack_ep.recovered()
        except sqlite3.DatabaseError as exc:
            if code(exc) in CORRUPT:
                self._recover(exc)
                return
            with self._acked_lock:
                self._acked[:0] = spans[-MAX_ACKED:]
            self._ack_ep.failed(describe(exc), spans=len(spans))

    def _evict(self, n: int) -> int:
        """Bounds' callback: delete the `n` oldest rows, counted in `meta.evicted`, and forget
        the live tail (an evicted reading must not be sent from memory)."""
        evicted = self._delete(schema.EVICT_OLDEST, (n,), schema.EVICTED)
        if evicted:
            self._tail.forget()
        return evicted

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
            self._db.execute(schema.ADD_TO_META, (-deleted, schema.DEPTH))
            if counter:
                self._db.execute(schema.ADD_TO_META, (deleted, counter))
            self._db.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        self._file.mark.add(depth=-deleted, **({counter: deleted} if counter else {}))
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

    # healing
    def _recover(self, exc: sqlite3.DatabaseError) -> None:
        """A corruption found while running: set the file aside and continue on a fresh one."""
        self._tail.forget()
        with self._lock:
            self._db.close()
            self._file.move_aside(exc)
            self._db = self._file.open()
        with contextlib.suppress(sqlite3.DatabaseError):  # bounds may have shrunk since
            self._bounds.enforce(force=True)

    def _reader_corrupt(self, exc: sqlite3.DatabaseError, generation: int) -> None:
        """The reader found the file corrupt: heal, unless that file was replaced already."""
        with self._lock:
            if generation == self._file.generation:
                self._recover(exc)


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
