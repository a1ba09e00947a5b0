"""The scheduler's pure planning functions: monotonic beats without drift or bursts, aligned
wall-clock beats across DST changes, all in O(1) whatever the gap."""

from __future__ import annotations

import math
from datetime import datetime
from functools import cache
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from agent.polling.plan import (
    UtcOffset,
    local_utcoffset,
    next_aligned,
    next_aligned_beat,
    next_due,
    replanned,
    stepped,
)

WEEK = 7 * 86_400.0
INTERVALS = st.floats(0.01, WEEK, allow_nan=False)


def on_grid(t: float, origin: float, interval: float) -> bool:
    """`t` is `origin` plus a whole number of intervals, to a microsecond (times up to 1e10 s
    are floats to about 1e-6 s)."""
    r = (t - origin) % interval
    return min(r, interval - r) <= 2e-6


@given(st.floats(0, 1e7), INTERVALS, st.floats(0, 1e9))
def test_next_due_is_the_next_beat_or_the_first_future_one(due: float, interval: float,
                                                           late: float) -> None:
    now = due + late
    nxt = next_due(due, interval, now)
    if now - (due + interval) <= interval:  # on time, or one beat late: that beat, at once
        assert nxt == due + interval
    else:  # further behind: the missed beats are skipped, the next is in the future
        assert now < nxt <= now + interval + 1e-6
        assert on_grid(nxt, due, interval)
    assert nxt >= now - interval, "never more than one beat behind: no make-up burst"


def test_a_week_long_gap_is_one_step_not_604800() -> None:
    assert next_due(0.0, 1.0, WEEK + 0.5) == WEEK + 1
    assert next_due(100.0, 1.0, 100.5) == 101.0  # on time: no drift
    assert next_due(100.0, 1.0, 101.7) == 101.0  # one beat late: it runs at once, once
    assert next_due(100.0, 1.0, 102.5) == 103.0  # two late: skipped to the next future beat


@given(st.floats(0.05, 10), st.lists(st.floats(0, 25), min_size=1, max_size=60))
def test_polls_never_burst_and_never_drift(interval: float, durations: list[float]) -> None:
    """A worker running one device whose polls take `durations` (in intervals): a poll starts
    at its deadline or when the previous one ended; never more than two start within one
    interval, and while polls are quick every beat is on the original grid."""
    due, end, starts = 0.0, 0.0, []
    for d in durations:
        start = max(due, end)
        starts.append(start)
        end = start + d * interval
        due = next_due(due, interval, end)
        assert on_grid(due, 0.0, interval)
    for i in range(len(starts) - 2):
        assert starts[i + 2] - starts[i] >= interval - 1e-9, "three polls in an interval"


@given(st.lists(st.floats(0, 0.9), min_size=1, max_size=50))
def test_quick_polls_keep_the_exact_grid(durations: list[float]) -> None:
    due = 0.0
    for k, d in enumerate(durations, start=1):
        due = next_due(due, 0.25, due + d * 0.25)
        assert due == k * 0.25


OFFSETS = st.integers(-48, 56).map(lambda q: q * 900.0)  # -12 h .. +14 h in quarter hours
WALL = st.floats(1.7e9, 2.1e9)


@given(WALL, st.sampled_from([0.1, 1, 5, 60, 90, 300, 900, 3600, 86_400, WEEK]) | INTERVALS,
       OFFSETS)
def test_aligned_is_the_next_local_multiple(after: float, interval: float, off: float) -> None:
    t = next_aligned(after, interval, lambda _t: off)
    assert after < t <= after + interval + 1e-6
    assert on_grid(t + off, 0.0, interval)


def zone(name: str) -> UtcOffset:
    tz = ZoneInfo(name)

    def offset(t: float) -> float:
        delta = datetime.fromtimestamp(t, tz).utcoffset()
        assert delta is not None
        return delta.total_seconds()

    return offset


ZONES = {z: zone(z) for z in ("Europe/Berlin", "America/Santiago", "Australia/Lord_Howe",
                              "America/New_York", "Asia/Seoul")}


@cache
def transitions(name: str) -> list[float]:
    """The instants in 2026-2027 at which the zone's offset changes (to the minute)."""
    off, found, t = ZONES[name], [], 1_767_225_600.0  # 2026-01-01
    while t < 1_830_297_600:  # 2028-01-01
        if off(t) != off(t + 3600):
            lo, hi = t, t + 3600
            while hi - lo > 60:
                mid = (lo + hi) / 2
                lo, hi = (mid, hi) if off(mid) == off(lo) else (lo, mid)
            found.append(hi)
        t += 3600
    return found


@given(st.sampled_from(sorted(ZONES)), st.data(),
       st.sampled_from([60, 300, 900, 1800, 3600, 7200, 86_400]))
def test_aligned_across_dst_changes(name: str, data: st.DataObject, interval: float) -> None:
    """Near a DST change: the result is aligned in the offset in force then, and no aligned
    instant (in either offset) was passed over."""
    off = ZONES[name]
    near = transitions(name) or [1.8e9]
    after = data.draw(st.sampled_from(near)) + data.draw(st.floats(-2 * 86_400, 2 * 86_400))
    t = next_aligned(after, interval, off)
    assert t > after
    skipped = off(t - 1) != off(t) and on_grid(t + off(t - 1), 0.0, interval)  # Santiago
    assert on_grid(t + off(t), 0.0, interval) or skipped
    assert t - after <= interval + 3600 + 1e-6
    for o in {off(after), off(t)}:  # every earlier multiple of either offset is not aligned
        g = (math.floor((after + o) / interval) + 1) * interval - o
        while g < t - 1e-6:
            assert off(g) != o, f"passed over {g} ({o})"
            g += interval


def test_a_daily_beat_is_local_midnight_through_dst() -> None:
    berlin, off = ZoneInfo("Europe/Berlin"), ZONES["Europe/Berlin"]
    t = datetime(2026, 3, 27, 15, 0, tzinfo=berlin).timestamp()  # DST begins on 29 March
    for _ in range(5):
        t = next_aligned(t, 86_400, off)
        local = datetime.fromtimestamp(t, berlin)
        assert (local.hour, local.minute, local.second) == (0, 0, 0), local
    assert local.day == 1 and local.month == 4


def test_next_aligned_reads_the_offset_at_most_three_times() -> None:
    calls: list[float] = []

    def counted(t: float) -> float:
        calls.append(t)
        return ZONES["Europe/Berlin"](t)

    next_aligned(1.8e9, 300, counted)
    assert len(calls) <= 3


def test_aligned_beats_follow_on_skip_after_an_overrun() -> None:
    def fixed(_t: float) -> float:
        return 3600.0  # UTC+1

    prev = 1_800_000_000.0  # a multiple of 300 s in UTC+1 too (3600 is one)
    assert next_aligned_beat(prev, 300, prev + 1, fixed) == prev + 300
    assert next_aligned_beat(prev, 300, prev + 500, fixed) == prev + 300  # one late: at once
    assert next_aligned_beat(prev, 300, prev + 700, fixed) == prev + 900  # skipped ahead
    assert next_aligned_beat(prev, 300, prev + WEEK + 1, fixed) == prev + WEEK + 300


@given(WALL, st.sampled_from([0.1, 1, 60, 300, 86_400]), st.floats(0, 5), OFFSETS)
def test_a_replan_runs_at_most_the_beat_found_late(wall: float, interval: float, since: float,
                                                  off: float) -> None:
    """After a step found `since` s late, the next beat is the first multiple after
    `wall - min(interval, since)`: at most one beat in the past, none of those jumped over."""
    t = replanned(wall, interval, since, lambda _t: off)
    back = min(interval, since)
    assert wall - back < t <= wall - back + interval + 1e-6
    assert on_grid(t + off, 0.0, interval)
    assert replanned(wall, interval, 0.0, lambda _t: off) == next_aligned(wall, interval,
                                                                          lambda _t: off)


def test_steps_and_the_local_offset() -> None:
    assert not stepped(1000.0, 1000.4)  # a time daemon slewing
    assert stepped(1000.0, 1000.0 + WEEK) and stepped(1000.0, 940.0)
    assert local_utcoffset(1.8e9) == datetime.fromtimestamp(1.8e9).astimezone().utcoffset(
    ).total_seconds()  # type: ignore[union-attr]


def test_a_daily_read_on_a_day_without_midnight_comes_at_the_days_first_instant() -> None:
    """Santiago's clock jumps from 00:00 to 01:00: the read comes at 01:00, not a day later."""
    off = ZONES["America/Santiago"]
    spring = next(t for t in transitions("America/Santiago") if off(t) > off(t - 120))
    change = spring - 120 + next(s for s in range(0, 121) if off(spring - 120 + s) == off(spring))
    t = next_aligned(change - 3601, 86_400, off)
    assert abs(t - change) <= 60 and t - (change - 3601) < 86_400
