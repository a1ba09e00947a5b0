"""Listeners: the core's reader for lines where the device talks on its own (streaming sensors).

A `Listener` owns one port for as long as its device is configured: a thread reads whatever
arrives and keeps it, time-stamped on arrival and tagged with the port's open count, in a
bounded buffer until the device's driver `take`s it at its next poll; the driver frames and
parses those bytes, nothing here knows a protocol. When the port fails (a USB adapter
unplugged: the device path disappears, reads fail) the listener closes it and reopens it with
exponential backoff (`REOPEN_MIN` .. `REOPEN_MAX`), without the agent restarting; the device's
runner reports offline/online from what `take` says. An optional greeting (a "start
streaming" command) is sent at every open. Bytes beyond `max_bytes` not yet taken are dropped
oldest first and counted, so a driver that stops polling cannot make the agent grow.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

from agent.core import log
from agent.core.errors import DriverError
from agent.core.model import now_ms
from agent.transport.ports import Port

REOPEN_MIN, REOPEN_MAX = 0.2, 2.0
"""Backoff between attempts to reopen a failed port (seconds)."""
READ_WAIT = 0.1
"""Longest a read waits for bytes; bounds how long `stop` takes."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """Bytes as they arrived: epoch ms, the port's open count then, the bytes."""

    ts: int
    opens: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Heard:
    """What a listener got since the last `take`."""

    chunks: list[Chunk] = field(default_factory=list)
    error: str | None = None
    """Why the port is not open now (None: it is)."""
    opened_at: float = 0.0
    """monotonic time the port was last opened (0: never)."""
    dropped: int = 0
    """Bytes dropped because nobody took them in time."""


class Listener:
    """Reads one port continuously on its own thread; `take` hands over what arrived."""

    def __init__(self, port: Port, device: str, greeting: bytes | None = None,
                 max_bytes: int = 1 << 20) -> None:
        self.port = port
        self.greeting = greeting
        self.max_bytes = max_bytes
        self._chunks: deque[Chunk] = deque()
        self._size = 0
        self._dropped = 0
        self.received = 0
        """Bytes read since start."""
        self._error: str | None = "not opened yet"
        self._opened_at = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = log.get("listen", device)

    @property
    def connected(self) -> bool:
        with self._lock:
            return self._error is None

    def start(self) -> None:
        """Open the port (or note why not) and start reading on a thread; idempotent."""
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            delay = self._step(0.0)  # the first poll right after start knows the port's state
            self._thread = threading.Thread(target=self._run, args=(delay,), daemon=True,
                                            name=f"listen:{self.port.name}")
            self._thread.start()

    def stop(self) -> None:
        """Stop reading and close the port; never raises."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        with self.port.lock:
            self.port.close()

    def take(self) -> Heard:
        with self._lock:
            heard = Heard(list(self._chunks), self._error, self._opened_at, self._dropped)
            self._chunks.clear()
            self._size = self._dropped = 0
        return heard

    def _run(self, delay: float | None) -> None:
        backoff = REOPEN_MIN
        while not self._stop.is_set():
            if delay is not None:
                self._stop.wait(delay)  # backoff before reopening, not synchronization
                backoff = min(delay * 2, REOPEN_MAX)
            delay = self._step(READ_WAIT, backoff)
            if delay is None:
                backoff = REOPEN_MIN

    def _step(self, wait: float, backoff: float = REOPEN_MIN) -> float | None:
        """Read once (opening the port if needed); the delay before the next try if it failed."""
        try:
            with self.port.lock:
                before = self.port.opens
                data = self.port.read_available(wait)
                opened = self.port.opens != before
                if opened and self.greeting:
                    self.port.send(self.greeting)
        except DriverError as exc:
            with self.port.lock:
                self.port.close()
            with self._lock:
                self._error = str(exc)
            return backoff
        except Exception as exc:  # a bug must not end listening for good
            self._log.exception("listener failed", error=repr(exc))
            with self._lock:
                self._error = f"listener failed: {exc!r}"
            return REOPEN_MAX
        with self._lock:
            if opened or self._error is not None:
                self._error, self._opened_at = None, time.monotonic()
            if data:
                self.received += len(data)
                self._keep(Chunk(now_ms(), self.port.opens, data))
        return None

    def _keep(self, chunk: Chunk) -> None:
        self._chunks.append(chunk)
        self._size += len(chunk.data)
        while self._size > self.max_bytes and len(self._chunks) > 1:
            old = self._chunks.popleft()
            self._size -= len(old.data)
            self._dropped += len(old.data)
