"""The committed high-water mark beside the queue file: what the file held after its last commit,
so that a file that went back in time is noticed when it is opened (agent.queue.files).

`Mark` owns `<path>.mark`: 60 bytes, rewritten in place after every committed transaction with
the counters of `meta` as that transaction left them (FIELDS: next_seq, depth, evicted, dropped,
lost) and `low`, the lowest seq the file held when it was opened, then a CRC-32 of those. It is
written with one pwrite(2) and never synced: the page cache outlives a kill -9 of the agent, so
after a crash the mark is exactly as recent as the file (it is written after the commit, so it
is never ahead of what was committed); a power cut may lose its last writes while the file's,
synced, survive: the mark is then behind the file, and nothing is reported (detection is
best-effort there). A missing, torn or foreign file reads as no mark. Cost: one pwrite of 60
bytes per commit, one read at open.
"""

from __future__ import annotations

import os
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from agent.queue.schema import DEPTH, DROPPED, EVICTED, LOST, NEXT_SEQ

MAGIC = b"EQMARK01"
FIELDS = (NEXT_SEQ, DEPTH, EVICTED, DROPPED, LOST)
_BODY = struct.Struct("<8s6q")  # MAGIC, the FIELDS in order, low
SIZE = _BODY.size + 4  # and the CRC-32 of the body


class Mark:
    """The mark of the queue file at `path` (kept in `<path>.mark`)."""

    def __init__(self, path: Path) -> None:
        self.path = path.with_name(path.name + ".mark")
        self.values: dict[str, int] = dict.fromkeys(FIELDS, 0)  # meta as last committed
        self.low = 1  # the lowest seq the file held when it was opened (or its next_seq)
        self._file: BinaryIO | None = None  # (a file object: closed if dropped unclosed)

    def read(self) -> tuple[dict[str, int], int] | None:
        """The mark as last written, (values by FIELDS, low); None if there is none."""
        try:
            data = self.path.read_bytes()[:SIZE]
        except OSError:
            return None
        if len(data) < SIZE or zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "little"):
            return None
        magic, *numbers = _BODY.unpack(data[:-4])
        if magic != MAGIC:
            return None
        return dict(zip(FIELDS, numbers[:-1], strict=True)), numbers[-1]

    def note(self, committed: Iterable[tuple[str, int]]) -> None:
        """The file holds these (key, value) counters (read at open): write the mark."""
        self.values.update(committed)
        self.write()

    def add(self, next_seq: int | None = None, **deltas: int) -> None:
        """A transaction of this process committed: next_seq is now `next_seq` (if given),
        the other counters grew by `deltas`; write the mark. Kept in memory, not read back
        (RETURNING would cost a third of a small commit): exact for the transactions of this
        process; another's (`edge-agent queue export --delete`) can only leave `depth` too high
        until the next open, which bounds a loss from above all the same."""
        v = self.values
        if next_seq is not None:
            v[NEXT_SEQ] = next_seq
        for key, delta in deltas.items():
            v[key] += delta
        self.write()

    def write(self) -> None:
        """Best effort: a filesystem that refuses it (read-only, full) leaves the mark older."""
        v = self.values
        body = _BODY.pack(MAGIC, v[NEXT_SEQ], v[DEPTH], v[EVICTED], v[DROPPED], v[LOST],
                          self.low)
        try:
            if self._file is None:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                self._file = os.fdopen(fd, "r+b", buffering=0)  # not O_APPEND: pwrite at 0
            os.pwrite(self._file.fileno(), body + zlib.crc32(body).to_bytes(4, "little"), 0)
        except OSError:
            pass

    def close(self) -> None:
        if self._file is not None:
            f, self._file = self._file, None
            f.close()
