"""Polling: when each device is polled, and on which thread. Scheduled on the monotonic clock.

`Scheduler` runs the runners (`agent.polling.runner`) at their own intervals on worker threads
it owns: one per shared bus, running that bus's devices one at a time (one owner per line: its
requests never overlap, and a dead unit costs the others at most its own timeout), and one per
private-connection device (`driver.bus is None`), so different buses and private devices poll
in parallel. A worker sleeps on its condition until its earliest deadline: no wake-ups when
there is nothing to do.

Invariants:
- Deadlines are `time.monotonic()` times; the next is the previous plus the interval (no drift,
  `agent.polling.plan.next_due`). A poll never overlaps itself: a slow device skips beats
  instead of piling up polls, and a worker that fell behind never runs a burst of make-up polls.
- A wall-clock step (NTP at boot on a Pi without RTC, a person) never decides when an
  unaligned device is polled: they never read the wall clock.
- `align: true` devices are due at wall-clock multiples of their interval in local time
  (`plan.next_aligned`), waited for on the monotonic clock. Their worker looks at the wall clock
  at least every `WALL_CHECK` s; when the wall-minus-monotonic offset moved by more than
  `plan.WALL_STEP`, or the local UTC offset changed, it re-plans its aligned devices once from
  the new wall time (`plan.replanned`: the beats the step jumped over are not replayed).
- `stop()` and `remove()` start no new beat; a poll in progress finishes and its readings are
  queued before the runner is closed.

The clocks come in through the constructor (`monotonic`, `wall`, `utcoffset`), so tests step
the wall clock without touching the machine's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from agent.core import clock, log
from agent.polling.plan import (
    UtcOffset,
    local_utcoffset,
    next_aligned,
    next_aligned_beat,
    next_due,
    replanned,
    stepped,
)
from agent.polling.runner import DeviceRunner
from agent.transport.ports import Port, close_all

WALL_CHECK = 1.0
"""Longest sleep (s) of a worker with aligned devices between looks at the wall clock: how late
an aligned beat can be right after a wall-clock step."""


def wall_now() -> float:
    """The wall clock the agent stamps readings with (`agent.core.clock`), in epoch seconds."""
    return clock.now_ms() / 1000


@dataclass(frozen=True)
class Clocks:
    """Where the scheduler reads time: monotonic (deadlines), wall and local offset (aligned)."""

    monotonic: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = wall_now
    utcoffset: UtcOffset = local_utcoffset


@dataclass(eq=False)
class Entry:
    """One runner on a worker: its next deadline (monotonic) and, if aligned, its wall time."""

    runner: DeviceRunner
    due: float = 0.0
    wall_due: float | None = None  # aligned: the wall-clock time (epoch s) of the next beat
    removed: bool = False


class Worker:
    """One thread polling its entries one at a time, each at its deadline."""

    def __init__(self, name: str, clocks: Clocks) -> None:
        self.name = name
        self.entries: list[Entry] = []
        self.replans = 0  # wall-clock steps (or DST changes) its aligned entries re-planned for
        self._clocks = clocks
        self._cond = threading.Condition()
        self._stopping = False
        self._offset: float | None = None  # wall - monotonic at the last look (aligned only)
        self._looked = 0.0  # monotonic time of that look
        self._utcoff = 0.0
        self._thread: threading.Thread | None = None
        self._log = log.get("poll")

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"poll:{self.name}",
                                            daemon=True)
            self._thread.start()

    def add(self, runner: DeviceRunner) -> None:
        """Plan `runner`'s first beat (now, or its next aligned time) and wake the worker."""
        entry = Entry(runner)
        c = self._clocks
        with self._cond:
            mono = c.monotonic()
            entry.due = mono
            if runner.align:
                wall = c.wall()
                if not any(e.wall_due is not None for e in self.entries):  # its first one
                    self._offset, self._utcoff = wall - mono, c.utcoffset(wall)
                    self._looked = mono
                entry.wall_due = next_aligned(wall, runner.interval, c.utcoffset)
                entry.due = mono + entry.wall_due - wall
            self.entries.append(entry)
            self._cond.notify()

    def remove(self, name: str) -> bool:
        """No new beats for `name` (a poll in progress finishes); True if it was here."""
        with self._cond:
            for entry in self.entries:
                if entry.runner.name == name:
                    entry.removed = True
                    self.entries.remove(entry)
                    self._cond.notify()
                    return True
        return False

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while (entry := self._next()) is not None:
            try:
                entry.runner.poll_once()
            except Exception as exc:  # poll_once never raises; a worker must never die
                self._log.exception("poll crashed", device=entry.runner.name, error=repr(exc))
            with self._cond:
                if not entry.removed:
                    self._plan_after(entry)

    def _next(self) -> Entry | None:
        """Wait for the earliest deadline; the entry due, or None when stopping."""
        c = self._clocks
        with self._cond:
            while not self._stopping:
                now = c.monotonic()
                aligned = any(e.wall_due is not None for e in self.entries)
                if aligned:
                    self._watch_wall(now)
                if not self.entries:
                    self._cond.wait()
                    continue
                entry = min(self.entries, key=lambda e: e.due)
                if entry.due <= now:
                    return entry
                wait = min(entry.due - now, WALL_CHECK if aligned else threading.TIMEOUT_MAX)
                self._cond.wait(wait)
        return None

    def _plan_after(self, entry: Entry) -> None:
        """The next deadline of an entry whose beat just ran."""
        c, interval = self._clocks, entry.runner.interval
        now = c.monotonic()
        if entry.wall_due is None:
            entry.due = next_due(entry.due, interval, now)
            return
        wall = c.wall()
        entry.wall_due = next_aligned_beat(entry.wall_due, interval, wall, c.utcoffset)
        entry.due = now + entry.wall_due - wall

    def _watch_wall(self, now: float) -> None:
        """Follow the wall clock for the aligned entries: their deadlines track its slewing;
        after a step (or a change of the local UTC offset) they are re-planned from it once."""
        c = self._clocks
        wall = c.wall()
        offset, utcoff = wall - now, c.utcoffset(wall)
        jumped = self._offset is not None and (
            stepped(self._offset, offset) or utcoff != self._utcoff)
        aligned = []
        for e in self.entries:
            if e.wall_due is None:
                continue
            if jumped:
                e.wall_due = replanned(wall, e.runner.interval, now - self._looked, c.utcoffset)
            e.due = now + e.wall_due - wall
            aligned.append(e.runner.name)
        if jumped:
            self.replans += 1
            self._log.info("wall clock stepped: aligned polls re-planned",
                           step_s=round(offset - (self._offset or 0.0), 3),
                           devices=aligned)
        self._offset, self._utcoff, self._looked = offset, utcoff, now


class Scheduler:
    """Runs each runner's `poll_once` at its interval: one worker per bus, one per private
    device."""

    def __init__(self, runners: Sequence[DeviceRunner], ports: Mapping[str, Port] | None = None,
                 *, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = wall_now,
                 utcoffset: UtcOffset = local_utcoffset) -> None:
        self.runners = list(runners)
        self.ports = dict(ports or {})
        self.buses = sorted({b for r in self.runners if (b := r.driver.bus) is not None})
        self._clocks = Clocks(monotonic, wall, utcoffset)
        self._bus_workers: dict[str, Worker] = {}
        self._private: dict[str, Worker] = {}  # runner name -> its own worker
        self._lock = threading.Lock()  # add / remove / stop come from the main thread and tests
        self._started = self._stopped = False

    @property
    def replans(self) -> int:
        """Wall-clock steps (or DST changes) for which aligned devices were re-planned."""
        return sum(w.replans for w in self._workers())

    def _workers(self) -> list[Worker]:
        return [*self._bus_workers.values(), *self._private.values()]

    def start(self) -> None:
        """Start polling: every runner's first beat is now (an aligned one's, its next time)."""
        with self._lock:
            if self._started:
                return
            self._started = True
            for r in self.runners:
                self._schedule(r)

    def _schedule(self, r: DeviceRunner) -> None:
        bus = r.driver.bus
        if bus is None:
            worker = self._private[r.name] = Worker(r.name, self._clocks)
        else:
            if bus not in self._bus_workers:  # a bus that did not exist at start
                self._bus_workers[bus] = Worker(f"bus:{bus}", self._clocks)
                self.buses = sorted({*self.buses, bus})
            worker = self._bus_workers[bus]
        worker.add(r)
        worker.start()

    def add(self, r: DeviceRunner) -> None:
        """Start polling one more runner (a reload); its first beat is now."""
        with self._lock:
            if self._stopped:
                raise RuntimeError("the scheduler is stopped")
            self.runners.append(r)
            if self._started:
                self._schedule(r)

    def remove(self, name: str) -> DeviceRunner | None:
        """Stop polling one runner (a reload): no new beats, the one in progress finishes and
        is queued, then its driver is closed. Shared ports stay open."""
        with self._lock:
            r = next((x for x in self.runners if x.name == name), None)
            if r is None:
                return None
            self.runners.remove(r)
            private = self._private.pop(name, None) if r.driver.bus is None else None
            bus = None if r.driver.bus is None else self._bus_workers.get(r.driver.bus)
        for worker in (private, bus):
            if worker is not None:
                worker.remove(name)
        r.close()  # waits for a poll in progress; a beat already picked then does nothing
        if private is not None:
            private.stop()
            private.join()
        return r

    def stop(self) -> None:
        """Stop scheduling; wait for polls in progress to finish and be queued; then close the
        runners and the ports."""
        with self._lock:
            self._stopped = True
            workers = self._workers()
        for w in workers:
            w.stop()
        for w in workers:
            w.join()
        for r in self.runners:
            r.close()
        close_all(self.ports)
