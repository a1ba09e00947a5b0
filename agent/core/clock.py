"""Time the agent can vouch for: wall-clock readings, whether the clock is synchronized, and a
seam that tests use to make the clock jump.

A Raspberry Pi has no real-time clock: until NTP (systemd-timesyncd, chrony) has set the time
it may be 1970 or the time of the last shutdown. `synced()` asks the kernel (adjtimex: the
STA_UNSYNC flag that time daemons clear once synchronized) and refuses any time before
`FLOOR_MS` (this release was built after it). `Clock` is what the agent reads time from; tests
substitute `ManualClock` to jump time without touching the machine's clock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
import time
from collections.abc import Callable
from typing import Protocol

FLOOR_MS = 1_764_000_000_000  # 2025-11-24: a wall clock earlier than this is certainly wrong
_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


class _Timex(ctypes.Structure):
    # struct timex (linux/timex.h): modes, then longs; we only read `status` and the result.
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long),
                ("status", ctypes.c_int), ("pad", ctypes.c_long * 32)]


@functools.cache
def _libc() -> ctypes.CDLL:
    """libc, looked up once: find_library runs `ldconfig -p` (a fork) at every call."""
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def kernel_synced() -> bool | None:
    """The kernel's view (adjtimex, read-only): True/False, or None where it cannot say."""
    try:
        libc = _libc()
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR and not tx.status & _STA_UNSYNC


class Clock(Protocol):
    def now_ms(self) -> int:
        """Wall-clock time, UTC epoch ms."""

    def mono_ms(self) -> int:
        """Monotonic time (ms since boot); unaffected by clock steps."""

    def synced(self) -> bool:
        """True once the wall clock can be trusted."""


class SystemClock:
    """The machine's clock; the sync state is re-read at most every few seconds."""

    def __init__(self, recheck: float = 5.0) -> None:
        self.trusted = False  # gateway.clock: trusted (a battery RTC, or a host that keeps time)
        self._recheck = recheck
        self._checked_at = -recheck
        self._synced = False
        self._lock = threading.Lock()

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def mono_ms(self) -> int:
        return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // 1_000_000

    def synced(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if now - self._checked_at >= self._recheck:
                self._checked_at = now
                kernel = kernel_synced()
                plausible = self.now_ms() >= FLOOR_MS
                self._synced = plausible and (self.trusted or kernel is not False)
            return self._synced


class ManualClock:
    """A clock for tests: starts where it is told, moves only when told (`set`, `step`)."""

    def __init__(self, now_ms: int, synced: bool = True) -> None:
        self._wall_offset = now_ms - time.monotonic_ns() // 1_000_000
        self._synced = synced

    def now_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000 + self._wall_offset

    def mono_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000

    def synced(self) -> bool:
        return self._synced

    def set(self, now_ms: int, synced: bool | None = None) -> None:
        """Jump the wall clock to `now_ms` (forwards or backwards), as NTP or a person would."""
        self._wall_offset = now_ms - time.monotonic_ns() // 1_000_000
        if synced is not None:
            self._synced = synced


@functools.cache
def boot_id() -> str:
    """This boot's identity (short): monotonic times compare only within one boot."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()[:8]
    except OSError:
        return "unknown"


def corrector(clock: Clock) -> Callable[[int, str], tuple[int, str]]:
    """For a reading stamped while the clock was unsynchronized (tag "boot:offset", the
    wall-minus-monotonic offset then): its corrected time and "corrected" once the clock is
    synchronized in the same boot, else its time as stamped and "unsynced"."""
    synced, boot = clock.synced(), boot_id()
    offset_now = clock.now_ms() - clock.mono_ms()

    def fix(ts: int, tag: str) -> tuple[int, str]:
        tag_boot, _, offset_then = tag.rpartition(":")
        if synced and tag_boot == boot:
            return ts - int(offset_then) + offset_now, "corrected"
        return ts, "unsynced"

    return fix


SYSTEM = SystemClock()
_current: Clock = SYSTEM


def current() -> Clock:
    """The clock the agent reads time from (the system clock unless a test swapped it)."""
    return _current


def use(clock: Clock | None) -> None:
    """Test hook: make the whole process read time from `clock` (None: the system clock)."""
    global _current
    _current = clock or SYSTEM


def now_ms() -> int:
    """Wall-clock time as UTC epoch milliseconds, from the current clock."""
    return _current.now_ms()
