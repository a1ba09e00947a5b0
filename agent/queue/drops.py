"""Readings the queue had to give up without writing them: counted as `dropped`, logged with why.

`Drops` owns that count until the file has it, and the log lines that say it. Readings are
dropped when the memory buffer that holds what the database does not take (a read-only or
stalled disk, a lock held too long) is full, and at close for what is still held then. The
count not yet in the file (`unsaved`) is added to `meta.dropped` by the next transaction that
commits (`take` before it, `saved` after it), so `stats()` counts it either way, and a count
the file cannot take (read-only) stays in `stats()` and in the close's log line. The first drop
of a cause is logged at once, with how many and the cause in words; further drops of the same
cause are summed into one line every SUMMARY_EVERY s, and at `flush` (close). Thread-safe: poll
threads (the buffer full while the disk stalls), the committer and close all add to it.
"""

from __future__ import annotations

import threading
import time
from typing import Any

SUMMARY_EVERY = 60.0
"""Seconds between log lines while readings of one cause keep being dropped."""
EVENT = "queue readings dropped"


class Drops:
    def __init__(self, log: Any) -> None:
        self._log = log
        self._lock = threading.Lock()
        self.unsaved = 0  # dropped, not yet added to meta.dropped
        self.total = 0  # dropped since the queue was opened
        self._cause: str | None = None
        self._unlogged = 0  # dropped since the last line, of `_cause`
        self._logged_at = 0.0

    def add(self, n: int, cause: str, log: bool = True) -> None:
        """Count `n` readings dropped because of `cause`; log as described above (unless the
        caller logs the line itself: `log=False`)."""
        if n <= 0:
            return
        with self._lock:
            self.unsaved += n
            self.total += n
            if not log:
                return
            now = time.monotonic()
            if cause != self._cause:
                self._flush()
                self._cause, self._logged_at = cause, now
                self._log.error(EVENT, count=n, cause=cause, dropped_total=self.total)
                return
            self._unlogged += n
            if now - self._logged_at >= SUMMARY_EVERY:
                self._flush()
                self._logged_at = now

    def take(self) -> int:
        """The count to add to `meta.dropped` in the transaction about to commit."""
        with self._lock:
            return self.unsaved

    def saved(self, n: int) -> None:
        """The transaction that added `n` (from `take`) committed."""
        with self._lock:
            self.unsaved -= n

    def ended(self) -> None:
        """The database takes writes again: log what is left; the next drop is logged at once."""
        if self._cause is None:  # (unlocked: the usual case, after every commit)
            return
        with self._lock:
            self._flush()
            self._cause = None

    def flush(self) -> None:
        """Log what was dropped since the last line (before a close's own line)."""
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if self._unlogged and self._cause is not None:
            self._log.error(EVENT, count=self._unlogged, cause=self._cause,
                            dropped_total=self.total)
        self._unlogged = 0
