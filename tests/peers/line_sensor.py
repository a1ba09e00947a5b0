"""A simulated text sensor on a pseudo-terminal, for the tests and for trying configs on a bench.

This module owns `LineSensor`: the master side of a pty whose slave path is published as a
symlink the caller names (as udev publishes `/dev/serial/by-id/...`), so the agent opens the
symlink like a real USB adapter. It writes real bytes: lines pushed at its own pace
(`stream`), anything on demand (`write`: noise, half frames, bad checksums), and replies to
commands it reads (`reply`). `unplug` makes the port vanish the way a pulled USB adapter does
(the open line hangs up, the path disappears); `plug` brings it back on a new pty, usually
under another /dev/pts number, like a re-enumerated ttyUSBn. A pty ignores the baud rate:
line speed is not simulated. Nothing in the agent's runtime path imports it.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

Reply = bytes | Callable[[], bytes]


class LineSensor:
    """A text sensor behind a symlink; `plug()` first (or construct with plugged=True)."""

    def __init__(self, link: str | Path, *, plugged: bool = True) -> None:
        self.link = Path(link)
        self.received = b""  # everything the agent sent, in order
        self.written = 0  # bytes the agent could have read
        self.dropped = 0  # bytes not written because nobody read the line
        self.plugs = 0
        self._lock = threading.Lock()
        self._master: int | None = None
        self._slave: int | None = None
        self._frames: list[bytes] = []
        self._period = 0.0
        self._next = 0
        self._due = 0.0
        self._replies: dict[bytes, Reply] = {}
        self._pending = b""
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._run, name="line-sensor", daemon=True)
        if plugged:
            self.plug()
        self._thread.start()

    @property
    def tty(self) -> str | None:
        """The pty the link points at now (None while unplugged)."""
        with self._lock:
            return os.ttyname(self._slave) if self._slave is not None else None

    def plug(self) -> None:
        """A new pty, and the link pointed at it (atomically)."""
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        tmp = self.link.with_name(f".{self.link.name}.new")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(os.ttyname(slave))
        with self._lock:
            self._close_fds()
            self._master, self._slave = master, slave  # we hold the slave: no hang-up
            self._pending = b""
            self.plugs += 1
        os.replace(tmp, self.link)
        self._wake(b"w")  # to watch the new pty

    def unplug(self) -> None:
        """The path disappears and the open line hangs up."""
        with contextlib.suppress(FileNotFoundError):
            self.link.unlink()
        with self._lock:
            self._close_fds()
        self._wake(b"w")  # a select() in our thread holds the pty open until it returns

    def write(self, data: bytes) -> None:
        """Put bytes on the line now (the agent reads them from the link's other end)."""
        with self._lock:
            self._write(data)

    def stream(self, frames: Sequence[bytes], period: float) -> None:
        """Push `frames` in turn, one every `period` s, until `stream([], 0)`."""
        with self._lock:
            self._frames, self._period, self._next = list(frames), period, 0
            self._due = time.monotonic()
        self._wake(b"w")  # to the new pace

    def reply(self, replies: Mapping[bytes, Reply]) -> None:
        """Answer each command (bytes received, e.g. b"READ\\r\\n") with its reply."""
        with self._lock:
            self._replies = dict(replies)

    def close(self) -> None:
        self._wake(b"q")
        self._thread.join(5.0)
        self.unplug()
        for fd in (self._stop_r, self._stop_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _wake(self, what: bytes) -> None:
        with contextlib.suppress(OSError):
            os.write(self._stop_w, what)

    def _close_fds(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    def _write(self, data: bytes) -> None:
        if self._master is None:
            self.dropped += len(data)
            return
        try:
            sent = os.write(self._master, data)
        except OSError:  # BlockingIOError: the line's buffer is full (nobody reads)
            sent = 0
        self.written += sent
        self.dropped += len(data) - sent

    def _run(self) -> None:
        while True:
            with self._lock:
                master = self._master
                wait = max(0.0, self._due - time.monotonic()) if self._frames else 1.0
            fds = [self._stop_r] + ([master] if master is not None else [])
            try:
                ready = select.select(fds, [], [], wait)[0]
            except (OSError, ValueError):  # the pty was closed under us: look again
                continue
            if self._stop_r in ready and b"q" in os.read(self._stop_r, 64):
                return
            with self._lock:
                if master is not None and master in ready and master == self._master:
                    self._answer(master)
                if self._frames and time.monotonic() >= self._due:
                    self._write(self._frames[self._next % len(self._frames)])
                    self._next += 1
                    self._due += self._period  # the sensor's own pace
                    if self._due < time.monotonic():
                        self._due = time.monotonic() + self._period

    def _answer(self, master: int) -> None:
        try:
            data = os.read(master, 4096)
        except OSError:
            return
        self.received += data
        self._pending = (self._pending + data)[-256:]
        for command, reply in self._replies.items():
            if self._pending.endswith(command):
                self._pending = b""
                self._write(reply() if callable(reply) else reply)
                break
