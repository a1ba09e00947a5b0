"""The scheduler with real runners and queue, and small fake drivers (a device that answers at
once, slowly, or when released): beats on the monotonic clock, one poll at a time per bus,
wall-clock steps of +7 days and -60 s through the clock seam, aligned polls re-planned once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import agent.polling.scheduler as scheduler_module
from agent.core.clock import ManualClock
from agent.core.model import Reading, now_ms
from agent.polling.runner import DeviceRunner
from agent.polling.scheduler import Scheduler
from agent.queue.store import Queue
from drivers.base import DeviceConfig
from tests.support import wait_until

DAY_MS = 86_400_000
START_MS = 1_800_000_000_000  # 2027-01-15 08:00 UTC


class Line:
    """A shared bus: how many polls are on it at once, at most."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.active = self.most = 0

    def enter(self) -> None:
        with self._lock:
            self.active += 1
            self.most = max(self.most, self.active)

    def leave(self) -> None:
        with self._lock:
            self.active -= 1


class Fake:
    """A device that answers at once (or after `slow` s, or when `release` is set); it notes
    when each poll started, on the monotonic and on the scheduler's wall clock."""

    passive = False

    def __init__(self, name: str, interval: float, bus: str | None = None, *,
                 line: Line | None = None, align: bool = False,
                 wall: Callable[[], float] = time.time) -> None:
        self.config = DeviceConfig(name=name, driver="fake", interval=interval, align=align)
        self.bus, self.line, self.wall = bus, line, wall
        self.starts: list[float] = []
        self.walls: list[float] = []
        self.slow = 0.0
        self.release: threading.Event | None = None
        self.entered = threading.Event()
        self.closed = False

    def metrics(self) -> list[tuple[str, str | None]]:
        return [("n", None)]

    def open(self) -> None: ...

    def close(self) -> None:
        self.closed = True

    def poll(self) -> list[Reading]:
        self.starts.append(time.monotonic())
        self.walls.append(self.wall())
        if self.line is not None:
            self.line.enter()
        try:
            self.entered.set()
            if self.release is not None:
                self.release.wait(10)
            if self.slow:
                time.sleep(self.slow)  # the device takes this long to answer
        finally:
            if self.line is not None:
                self.line.leave()
        return [Reading(self.config.name, "n", float(len(self.starts)), None, now_ms())]


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[Queue]:
    q = Queue(tmp_path / "q.db")
    yield q
    q.close()


@pytest.fixture
def wall() -> ManualClock:
    return ManualClock(START_MS)


def seconds(clock: ManualClock) -> Callable[[], float]:
    return lambda: clock.now_ms() / 1000


def most_in_a_window(starts: list[float], interval: float) -> int:
    """The most polls that started within any window of one interval."""
    return max((sum(1 for t in starts[i:] if t < s + interval) for i, s in enumerate(starts)),
               default=0)


def poll_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("poll:")]


def test_each_device_at_its_own_interval_and_private_ones_in_parallel(queue: Queue) -> None:
    fast, slow = Fake("fast", 0.05), Fake("slow", 0.2)
    slow.slow = 0.1  # answers slowly: the fast device is polled meanwhile, on its own worker
    sched = Scheduler([DeviceRunner(fast, queue), DeviceRunner(slow, queue)])
    sched.start()
    try:
        wait_until(lambda: len(slow.starts) >= 5, what="5 slow polls")
    finally:
        sched.stop()
    assert not poll_threads()
    span = slow.starts[-1] - slow.starts[0]
    during = [t for t in fast.starts if slow.starts[0] <= t <= slow.starts[-1]]
    assert len(during) >= 0.3 * span / 0.05, "the fast device was held up by the slow one"
    assert most_in_a_window(fast.starts, 0.05) <= 3
    assert fast.closed and slow.closed


def test_beats_keep_to_their_grid_without_drift(queue: Queue) -> None:
    dev = Fake("d", 0.05)
    sched = Scheduler([DeviceRunner(dev, queue)])
    first = time.monotonic()  # the grid starts at the first beat, planned just after this
    sched.start()
    try:
        wait_until(lambda: len(dev.starts) >= 30, what="30 polls")
    finally:
        sched.stop()
    for k, t in enumerate(dev.starts):  # never early; late by a wake-up, not by k wake-ups
        assert t >= first + k * 0.05 - 1e-3, (k, t - first)
    assert dev.starts[29] - first < 29 * 0.05 + 1.0  # no accumulated drift (generous)


def test_a_slow_device_skips_beats_and_never_overlaps_itself(queue: Queue) -> None:
    line = Line()
    dev = Fake("slow", 0.05, line=line)
    dev.slow = 0.15  # three intervals per poll
    sched = Scheduler([DeviceRunner(dev, queue)])
    sched.start()
    try:
        wait_until(lambda: len(dev.starts) >= 5, what="5 slow polls")
        dev.slow = 0.0  # it answers at once again: no burst of make-up polls follows
        n = len(dev.starts)
        wait_until(lambda: len(dev.starts) >= n + 10, what="10 quick polls")
    finally:
        sched.stop()
    assert line.most == 1
    assert most_in_a_window(dev.starts, 0.05) <= 3


def test_one_bus_one_poll_at_a_time_buses_in_parallel(queue: Queue) -> None:
    line_a, line_b = Line(), Line()
    a = [Fake(f"a{i}", 0.03, "bus-a", line=line_a) for i in range(3)]
    a[2].slow = 0.1  # a unit slow to answer: the others on its bus wait for it, in turn
    b = Fake("b", 0.03, "bus-b", line=line_b)
    sched = Scheduler([DeviceRunner(d, queue) for d in (*a, b)])
    assert sched.buses == ["bus-a", "bus-b"]
    sched.start()
    try:
        wait_until(lambda: min(len(d.starts) for d in a) >= 8, what="every unit polled")
        assert sorted(poll_threads()) == ["poll:bus:bus-a", "poll:bus:bus-b"]
    finally:
        sched.stop()
    assert line_a.most == 1 and line_b.most == 1, "requests overlapped on one line"
    slow_span = a[2].starts[-1] - a[2].starts[0]
    assert len(b.starts) > len(a[2].starts) and slow_span > 0
    assert len(b.starts) >= 0.3 * slow_span / 0.03, "bus-b waited for bus-a"


def test_wall_clock_steps_never_touch_unaligned_polls(
        queue: Queue, wall: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    """+7 days, then -60 s: no stall, no burst, no walk over the missed beats; the wall clock
    is not even read."""
    reads = 0

    def counted_wall() -> float:
        nonlocal reads
        reads += 1
        return wall.now_ms() / 1000

    plans = 0
    real_next_due = scheduler_module.next_due

    def counted_next_due(due: float, interval: float, now: float) -> float:
        nonlocal plans
        plans += 1
        return real_next_due(due, interval, now)

    monkeypatch.setattr(scheduler_module, "next_due", counted_next_due)
    devs = [Fake(f"d{i}", 0.05, "rs485" if i < 2 else None) for i in range(4)]
    sched = Scheduler([DeviceRunner(d, queue) for d in devs], wall=counted_wall)
    sched.start()
    try:
        def polled(more: int) -> None:
            target = [len(d.starts) + more for d in devs]
            wait_until(lambda: all(len(d.starts) >= t for d, t in zip(devs, target,
                                                                      strict=True)),
                       timeout=10, what=f"{more} more polls of every device")

        polled(5)
        for step_ms in (7 * DAY_MS, -60_000):
            before = sum(len(d.starts) for d in devs)
            stepped_at = time.monotonic()
            wall.set(wall.now_ms() + step_ms)
            polled(10)  # a wall-clock scheduler stalls here for 60 s after the step back
            polls = sum(len(d.starts) for d in devs) - before
            after = [[t for t in d.starts if t >= stepped_at] for d in devs]
            assert all(most_in_a_window(s, 0.05) <= 3 for s in after), "a burst"
    finally:
        sched.stop()
    assert reads == 0
    assert plans <= sum(len(d.starts) for d in devs), "one plan per beat, whatever the step"
    assert polls >= 40


def aligned_offsets(walls: list[float], interval: float) -> list[float]:
    """How far after the nearest multiple of `interval` each poll started (wall clock)."""
    return [w - round(w / interval) * interval for w in walls]


def test_aligned_polls_land_on_wall_clock_multiples(queue: Queue, wall: ManualClock) -> None:
    wall.set(START_MS + 130)  # between two multiples of 200 ms
    dev = Fake("aligned", 0.2, align=True, wall=seconds(wall))
    sched = Scheduler([DeviceRunner(dev, queue)], wall=seconds(wall), utcoffset=lambda _t: 0.0)
    sched.start()
    try:
        wait_until(lambda: len(dev.starts) >= 6, what="6 aligned polls")
    finally:
        sched.stop()
    offsets = aligned_offsets(dev.walls, 0.2)
    assert min(offsets) >= -0.002, "polled before its time"
    assert sorted(offsets)[len(offsets) // 2] < 0.05
    slots = [round(w / 0.2) for w in dev.walls]
    assert slots == sorted(set(slots)), "a slot polled twice"
    assert dev.walls[0] >= START_MS / 1000 + 0.2 - 0.002, "the first beat waits for its time"
    assert sched.replans == 0


def test_a_daily_aligned_read_is_at_local_midnight_after_a_step(queue: Queue,
                                                               wall: ManualClock) -> None:
    """`interval: 1d, align: true` on a gateway at UTC+9 that booted with a stale clock: NTP
    steps it to 1.5 s before local midnight; the read comes then, once."""
    seoul = 9 * 3600.0
    midnight = (START_MS // DAY_MS + 1) * DAY_MS - int(seoul * 1000)  # 00:00 in UTC+9
    wall.set(midnight - DAY_MS // 2)  # noon: the read is 12 h away
    dev = Fake("totaliser", 86_400.0, align=True, wall=seconds(wall))
    sched = Scheduler([DeviceRunner(dev, queue)], wall=seconds(wall), utcoffset=lambda _t: seoul)
    sched.start()
    try:
        wall.set(midnight - 1500)
        wait_until(lambda: dev.starts, timeout=10, what="the midnight read")
        assert sched.replans == 1
    finally:
        sched.stop()
    assert len(dev.walls) == 1 and 0 <= dev.walls[0] - midnight / 1000 < 0.5, dev.walls


def test_aligned_polls_replan_once_per_step_and_never_replay(
        queue: Queue, wall: ManualClock, monkeypatch: pytest.MonkeyPatch) -> None:
    plans = 0
    real = scheduler_module.replanned

    def counted(wall: float, interval: float, since: float,
                utcoffset: Callable[[float], float]) -> float:
        nonlocal plans
        plans += 1
        return real(wall, interval, since, utcoffset)

    monkeypatch.setattr(scheduler_module, "replanned", counted)
    dev = Fake("aligned", 0.1, align=True, wall=seconds(wall))
    plain = Fake("plain", 0.1, wall=seconds(wall))
    sched = Scheduler([DeviceRunner(dev, queue), DeviceRunner(plain, queue)],
                      wall=seconds(wall), utcoffset=lambda _t: 3600.0)
    sched.start()
    try:
        wait_until(lambda: len(dev.starts) >= 3, what="3 aligned polls")
        for n, step_ms in enumerate((7 * DAY_MS, -60_000), start=1):
            stepped_at, first = time.monotonic(), len(dev.starts)
            wall.set(wall.now_ms() + step_ms)
            wait_until(lambda n=n: sched.replans == n, what="the re-plan")  # type: ignore[misc]
            wait_until(lambda f=first: len(dev.starts) >= f + 8, timeout=10,  # type: ignore[misc]
                       what="aligned polls after the step")
            assert sched.replans == n, "re-planned more than once for one step"
            after = [t for t in dev.starts if t >= stepped_at]
            assert most_in_a_window(after, 0.1) <= 3, "missed beats replayed"
            offsets = aligned_offsets(dev.walls[first + 2:], 0.1)
            assert min(offsets) >= -0.002 and sorted(offsets)[len(offsets) // 2] < 0.04
    finally:
        sched.stop()
    assert plans == 2, "a step is one plan, not a walk over missed beats"
    assert len(plain.starts) >= len(dev.starts) - 5


def test_a_dst_change_replans_aligned_polls_once(queue: Queue, wall: ManualClock) -> None:
    change = (wall.now_ms() + 400) / 1000
    dev = Fake("aligned", 0.1, align=True, wall=seconds(wall))
    sched = Scheduler([DeviceRunner(dev, queue)], wall=seconds(wall),
                      utcoffset=lambda t: 3600.0 if t < change else 7200.0)
    sched.start()
    try:
        wait_until(lambda: sched.replans == 1, what="the re-plan at the DST change")
        n = len(dev.starts)
        wait_until(lambda: len(dev.starts) >= n + 5, what="polls after the change")
    finally:
        sched.stop()
    assert sched.replans == 1


def test_add_and_remove_while_running(queue: Queue) -> None:
    a = Fake("a", 0.03, "bus-a")
    sched = Scheduler([DeviceRunner(a, queue)], {})
    sched.start()
    try:
        b, c = Fake("b", 0.03, "bus-new"), Fake("c", 0.03)
        sched.add(DeviceRunner(b, queue))  # a bus that did not exist at start gets its worker
        sched.add(DeviceRunner(c, queue))
        assert sched.buses == ["bus-a", "bus-new"]
        wait_until(lambda: len(b.starts) >= 3 and len(c.starts) >= 3, what="the added polled")
        assert "poll:c" in poll_threads()
        c.release = threading.Event()  # c's next poll waits for the device
        c.entered.clear()
        c.entered.wait(5)
        removed = threading.Event()
        remover = threading.Thread(target=lambda: (sched.remove("c"), removed.set()))
        remover.start()
        assert not removed.wait(0.2), "remove did not wait for the poll in progress"
        c.release.set()
        remover.join(5)
        assert removed.is_set() and c.closed
        n = len(c.starts)
        assert [r.name for r in sched.runners] == ["a", "b"]
        assert "poll:c" not in poll_threads()
        assert sched.remove("b") is not None and b.closed and not a.closed
        m = len(a.starts)
        wait_until(lambda: len(a.starts) >= m + 3, what="the rest polled on")
        assert len(c.starts) == n
        assert sched.remove("nope") is None
    finally:
        sched.stop()
    values = [q.reading.value for q in queue.peek(0, 10_000) if q.reading.device == "c"]
    assert float(n) in values, "the poll in progress at removal was not queued"


def test_stop_lets_the_poll_in_progress_finish_and_queue(queue: Queue) -> None:
    dev = Fake("d", 0.05)
    sched = Scheduler([DeviceRunner(dev, queue)])
    sched.start()
    wait_until(lambda: len(dev.starts) >= 2, what="2 polls")
    dev.release = threading.Event()
    dev.entered.clear()
    dev.entered.wait(5)
    stopper = threading.Thread(target=sched.stop)
    stopper.start()
    assert dev.entered.is_set() and not dev.closed
    dev.release.set()
    stopper.join(5)
    n = len(dev.starts)
    assert dev.closed and not poll_threads()
    assert max(q.reading.value for q in queue.peek(0, 10_000)) == float(n)
    with pytest.raises(RuntimeError):
        sched.add(DeviceRunner(Fake("late", 1.0), queue))


def test_an_idle_worker_does_not_wake_up(queue: Queue) -> None:
    calls = 0

    def monotonic() -> float:
        nonlocal calls
        calls += 1
        return time.monotonic()

    dev = Fake("rare", 30.0)
    sched = Scheduler([DeviceRunner(dev, queue)], monotonic=monotonic)
    sched.start()
    try:
        wait_until(lambda: dev.starts, what="the first poll")
        time.sleep(0.2)  # a window for the first beat to be planned: nothing to wait for
        before = calls
        time.sleep(0.5)  # a window in which nothing is due: the worker must not wake
        assert calls == before
    finally:
        sched.stop()
