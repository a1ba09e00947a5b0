"""The live tail: the newest committed rows, kept in memory for the forwarder's live stream.

`Tail` owns the rows of the last commits, exactly as stored and with contiguous seqs, so that
readings just committed are sent without reading them back from the file (invariant 5 in
agent/queue/__init__.py). Rows before the window a caller asks for are let go (the forwarder
has sent them); at most 2 x TAIL rows are kept, and all are forgotten at an eviction or a
recovery, so that a row gone from the file is never sent from memory. It also knows the seq
after the newest row it was given (even once those rows are let go): a caller that has taken
everything up to it is told there is nothing newer without reading the file, which a frozen
disk could hold up (agent.queue.reader).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from agent.core.model import SEQ, Row

TAIL = 2_000
"""Newest committed rows kept for the live stream; up to 2 x TAIL (~1 MB) before the oldest
are dropped."""


class Tail:
    """Thread-safe (its own lock): the committer remembers, the forwarder takes."""

    def __init__(self) -> None:
        self._rows: list[Row] = []
        self._next: int | None = None  # the seq after the newest row remembered; None: unknown
        self._lock = threading.Lock()

    def remember(self, first: int, rows: Sequence[tuple[Any, ...]], tag: str | None) -> None:
        """Keep the rows (device .. quality) just committed as seqs first.. with `tag`."""
        kept: list[Row] = [(first + i, *row, tag) for i, row in enumerate(rows)]
        with self._lock:
            if self._rows and self._rows[-1][SEQ] + 1 != first:
                self._rows = []  # not contiguous (a fresh file): start again
            self._rows.extend(kept)
            self._next = first + len(rows)
            if len(self._rows) > 2 * TAIL:
                del self._rows[:-TAIL]

    def window(self, after_seq: int, limit: int) -> list[Row] | None:
        """Up to `limit` kept rows after `after_seq`, letting go of those before ([] if the
        caller has everything remembered); None if the window starts outside what is kept (it
        must be read from the file)."""
        with self._lock:
            rows = self._rows
            if rows and rows[0][SEQ] <= after_seq + 1 <= rows[-1][SEQ] + 1:
                del rows[:after_seq + 1 - rows[0][SEQ]]  # taken before: the caller moved on
                return rows[:limit]
            if not rows and after_seq + 1 == self._next:
                return []  # nothing committed since
        return None

    def forget(self) -> None:
        with self._lock:
            self._rows = []
            self._next = None

    def __len__(self) -> int:
        return len(self._rows)
