"""Group commit for the queue: the writes of many threads in one transaction, one fsync.

`GroupCommit` owns the line of writes waiting to be committed and who commits them. A
synchronous `put` that arrives while a commit runs waits for it, then goes into the next
transaction together with every write that arrived meanwhile; whoever finds no commit running
leads the next one. `submit` hands a write to a background committer thread and returns at
once, so a poll thread (a bus worker) goes back to its devices while the disk syncs; the
`Write` it returns (a `Receipt` to the queue's callers) says when the write is committed, and
`done` is called then. Writes are committed in arrival order; at most `max_waiting`
submitted readings wait, past that `submit` blocks until the committer caught up (memory
stays bounded when the disk is slow), but never longer than until the commit running has taken
`stall` s: a disk that stopped answering (frozen, an SD card stuck in its own housekeeping)
must not stop the polls, so from then on submitted writes are kept in line, up to the `limit`
the caller gives (past it `submit` hands back None, and the caller counts what it could not
keep). `Write.wait_unless_stalled` is the same pacing for a caller that waits on its own
writes. With `gather` the committer lets submitted writes join for up to that long after the
first one (or until half of `max_waiting` waits): a device polled back to back pays one
transaction per gather, not one per poll. `close` commits what was submitted at once, before
it returns (or gives up after its timeout, when the disk does not come back: `abandon` then
fails what is still in line and says how many items it and the stuck commit held).

The commit itself is the caller's function: it writes a group and sets each write's `seqs`
(or raises, which fails every write of the group that has no seqs yet).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar, overload

from agent.core import log
from agent.core.errors import QueueError
from agent.queue.receipt import Receipt

T = TypeVar("T")
STALL = 1.0
"""Seconds a commit may take before the disk counts as stalled: polls are then no longer held
back to its pace but kept in memory (a slow SD card syncs in 10-100 ms, a big group in a few
hundred)."""


class Write(Receipt, Generic[T]):
    """One caller's items waiting for their group's commit; its `Receipt` once handed back."""

    __slots__ = ("_owner", "done", "items", "submitted")

    def __init__(self, owner: GroupCommit[T], items: Sequence[T], submitted: bool = False,
                 done: Callable[[Write[T]], None] | None = None) -> None:
        super().__init__(owner.cond, len(items))  # seqs: set by the commit ([] if held/failed)
        self._owner = owner
        self.items = items
        self.submitted = submitted  # by submit(): counted in the committer's line
        self.done = done

    def wait_unless_stalled(self, timeout: float | None = None) -> bool:
        """Block until committed, `timeout` passed or the commit running stalled (False)."""
        owner, end = self._owner, None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.seqs is None:
                now = time.monotonic()
                stall_at = owner.stall_at()
                if (stall_at is not None and now >= stall_at) or (end is not None and now >= end):
                    return False
                left = [t - now for t in (stall_at, end) if t is not None]
                self._cond.wait(min(left, default=owner.stall))
            return True


class GroupCommit(Generic[T]):
    """Commits writes in groups with `commit(group)`; see the module docstring."""

    def __init__(self, commit: Callable[[list[Write[T]]], None],
                 max_waiting: int = 1_000, gather: float = 0.0, stall: float = STALL) -> None:
        self._commit = commit
        self._max_waiting = max_waiting
        self._gather = gather
        self.stall = stall
        self._started = 0.0  # when the commit running began
        self._running: list[Write[T]] = []  # its writes
        self._since = 0.0  # when the first write now waiting arrived
        self.cond = threading.Condition(threading.Lock())
        self._line: list[Write[T]] = []
        self._committing = False
        self._submitted = 0  # items submitted and not yet committed
        self._closing = False
        self._thread: threading.Thread | None = None
        self._log = log.get("queue")
        self.commits = 0  # transactions run (for tests and benchmarks)

    def put(self, items: Sequence[T]) -> list[int]:
        """Commit `items` (with whatever else is waiting); returns their seqs once written."""
        mine: Write[T] = Write(self, items)
        with self.cond:
            self._line.append(mine)
            while self._committing and mine.seqs is None:
                self.cond.wait()
            group = self._take() if mine.seqs is None else []
        if group:
            self._lead(group)
        if mine.error is not None:
            raise mine.error
        assert mine.seqs is not None
        return mine.seqs

    @overload
    def submit(self, items: Sequence[T], done: Callable[[Write[T]], None] | None = None,
               limit: None = None) -> Write[T]: ...
    @overload
    def submit(self, items: Sequence[T], done: Callable[[Write[T]], None] | None = None,
               limit: int | None = None) -> Write[T] | None: ...

    def submit(self, items: Sequence[T], done: Callable[[Write[T]], None] | None = None,
               limit: int | None = None) -> Write[T] | None:
        """Hand `items` to the background committer; returns at once (unless too much is
        waiting already and the disk is not stalled). `done(ticket)` runs once they are
        committed or failed. None (and `done` is not called) if the commit running is stalled
        and `limit` items are waiting already: the caller must count them."""
        ticket: Write[T] = Write(self, items, True, done)
        with self.cond:
            while (self._submitted and self._submitted + len(items) > self._max_waiting
                   and not self._closing):
                stall_at = self.stall_at()
                now = time.monotonic()
                if stall_at is not None and now >= stall_at:
                    break  # the disk stopped answering: keep the write in line instead
                # (no notify when a commit starts: wake up in time to see it stall)
                self.cond.wait(self.stall if stall_at is None else stall_at - now)
            if self._closing:
                raise QueueError("the queue is closed")
            stall_at = self.stall_at()
            if (limit is not None and items and self._submitted + len(items) > limit
                    and stall_at is not None and time.monotonic() >= stall_at):
                return None
            if not self._line:
                self._since = time.monotonic()
            self._line.append(ticket)
            self._submitted += len(items)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="queue-commit",
                                                daemon=True)
                self._thread.start()
            if not self._gather or len(self._line) == 1 or (
                    self._submitted >= self._max_waiting // 2):
                self.cond.notify_all()  # gathering: only the first write wakes the committer
        return ticket

    def stall_at(self) -> float | None:
        """When (time.monotonic()) the commit running counts as stalled; None if none runs."""
        return self._started + self.stall if self._committing else None

    def waiting(self) -> int:
        """Items not committed yet: in line, and in the commit running."""
        with self.cond:
            return sum(len(w.items) for w in (*self._line, *self._running))

    def close(self, timeout: float | None = None) -> bool:
        """Commit everything submitted so far, then stop the committer; idempotent. False if
        the committer was still at it after `timeout` s (a disk that does not answer)."""
        with self.cond:
            self._closing = True
            self.cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def abandon(self) -> int:
        """After a `close` that gave up: fail every write not committed (their `done` is not
        called) and return how many items they and the commit still running held."""
        with self.cond:
            line, self._line = self._line, []
            error = QueueError("the queue closed before the disk took these readings")
            for w in line:
                w.seqs, w.error = [], error
            self.cond.notify_all()
            return sum(len(w.items) for w in (*line, *self._running))

    def _take(self) -> list[Write[T]]:
        """Under `cond`, with no commit running: lead one for everything in line."""
        self._committing = True
        self._started = time.monotonic()
        group, self._line = self._line, []
        self._running = group
        return group

    def _lead(self, group: list[Write[T]]) -> None:
        try:
            self.commits += 1
            self._commit(group)
        except BaseException as exc:
            for w in group:
                if w.seqs is None:
                    w.error = exc
            raise
        finally:
            with self.cond:
                self._committing = False
                self._running = []
                for w in group:
                    if w.seqs is None:  # the commit raised before it got to this one
                        w.seqs = []
                        w.error = w.error or QueueError("queue commit failed")
                    if w.submitted:
                        self._submitted -= len(w.items)
                self.cond.notify_all()
            for w in group:
                if w.done is not None:
                    try:
                        w.done(w)
                    except Exception as exc:  # a caller's bug must not stop the committer
                        self._log.exception("queue commit callback failed", error=repr(exc))

    def _run(self) -> None:
        """The background committer: leads a commit whenever writes wait and none runs."""
        while True:
            with self.cond:
                while not self._line or self._committing:
                    if self._closing and not self._line and not self._committing:
                        return
                    self.cond.wait()
                # gather: let more writes join this commit, up to `gather` s after the first
                while (not self._closing and not self._committing
                       and self._submitted < self._max_waiting // 2
                       and (left := self._since + self._gather - time.monotonic()) > 0):
                    self.cond.wait(left)
                if self._committing or not self._line:  # a put() led the commit meanwhile
                    continue
                group = self._take()
            try:
                self._lead(group)
            except Exception as exc:  # already on each write (their `done` saw it): go on
                self._log.warning("queue commit failed", error=repr(exc))
