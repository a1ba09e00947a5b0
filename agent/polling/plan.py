"""When the next poll is due: the scheduler's pure planning functions (no clocks read here).

Two kinds of schedule, both computed in O(1) whatever the gap (a 7-day clock step costs the same
as a 1 ms one: no missed beat is ever enumerated):

- `next_due`: a device's beats on the monotonic clock, a grid `first + k * interval`. The next
  beat after one that ran is the next grid point (no drift); a beat late by at most one interval
  runs at once (once: coalesced); further behind, the missed beats are skipped and the next one
  is the first grid point in the future (never a burst of make-up polls).
- `next_aligned` / `next_aligned_beat`: `align: true` devices, whose beats are wall-clock times
  (epoch seconds) that are whole multiples of `interval` in local time, that is epoch seconds
  plus the UTC offset then (`interval: 1d` is local midnight, `5m` is :00, :05, ...). A DST
  change is honoured at the beat (the offset in force at that instant counts); a local time
  that the change skips has no beat, one that repeats may have two.

`stepped` says whether the wall clock was stepped (NTP at boot, a person) between two looks at
it: aligned beats are then re-planned from the new wall time (`replanned`), and the beats the
step jumped over are never replayed.

Invariants (property-tested in tests/polling/test_plan.py): `next_due(d, i, now)` is
`d + i` when `now - (d + i) <= i`, else the first `d + k*i` after `now`; `next_aligned(t, i, off)`
is the first aligned wall time after `t`, at most `i` (plus a DST shift) later.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

UtcOffset = Callable[[float], float]
"""The local UTC offset (seconds east of UTC) in force at a wall-clock time (epoch seconds)."""

WALL_STEP = 1.0
"""A change of the wall-minus-monotonic offset larger than this (s) between two looks is a
step of the wall clock, not the slewing of a time daemon (at most 0.5 ms/s)."""


def local_utcoffset(t: float) -> float:
    """The gateway's local UTC offset at `t` (the system time zone, DST included)."""
    return float(time.localtime(t).tm_gmtoff)


def next_due(due: float, interval: float, now: float) -> float:
    """The monotonic deadline of the beat after the one due at `due`, planned at `now` (when
    that beat has run). `due + interval` if it is at most one interval in the past; else the
    first `due + k * interval` after `now` (the beats in between are skipped)."""
    nxt = due + interval
    if now - nxt <= interval:
        return nxt
    nxt = due + (math.floor((now - due) / interval) + 1) * interval
    return nxt if nxt > now else nxt + interval  # float rounding at a grid point


def next_aligned(after: float, interval: float, utcoffset: UtcOffset = local_utcoffset) -> float:
    """The first wall-clock time after `after` (epoch s) that is a whole multiple of `interval`
    in local time (`t + utcoffset(t)`); when the clock skips that multiple (a DST change at
    midnight), the instant it skips to, so a daily read is late by the hour, never missed."""
    off = utcoffset(after)
    t = (math.floor((after + off) / interval) + 1) * interval - off
    if (changed := utcoffset(t)) != off:  # a DST change between `after` and t: its new offset
        old, t = t, (math.floor((after + changed) / interval) + 1) * interval - changed
        if utcoffset(t) != changed:  # the multiple fell in the hour the clock skipped (Santiago
            t = old  # jumps from 00:00 to 01:00): the change itself, the day's first instant
    return t if t > after else t + interval  # float rounding at a multiple


def next_aligned_beat(prev: float, interval: float, wall_now: float,
                      utcoffset: UtcOffset = local_utcoffset) -> float:
    """The wall-clock time of the aligned beat after the one at `prev`, planned at `wall_now`
    (when that beat has run): the next multiple, unless it is more than one interval in the
    past (a poll that overran, a stall), then the first one after `wall_now`."""
    nxt = next_aligned(prev, interval, utcoffset)
    if wall_now - nxt > interval:
        return next_aligned(wall_now, interval, utcoffset)
    return nxt


def replanned(wall_now: float, interval: float, since: float,
              utcoffset: UtcOffset = local_utcoffset) -> float:
    """The next aligned beat after the wall clock was found stepped, `since` s (monotonic)
    after the previous look at it: the first multiple after `wall_now - min(interval, since)`.
    A beat whose new wall time fell in that window (the step was found late) runs at once;
    the ones the step jumped over are never replayed."""
    return next_aligned(wall_now - min(interval, max(since, 0.0)), interval, utcoffset)


def stepped(offset_before: float, offset_now: float, limit: float = WALL_STEP) -> bool:
    """Whether the wall clock was stepped between two looks, given the wall-minus-monotonic
    offset at each."""
    return abs(offset_now - offset_before) > limit
