"""What the core remembers in memory about recent readings, for the status page and /metrics.

`DeviceRecent` is kept by each `DeviceRunner` where readings pass (after a poll, before the
reporting filter): per point the latest reading, the last value and when it last changed, and a
bounded history of numeric values for a sparkline (one sample per `step_ms` bucket, numbered
`ts // step_ms`, the newest in a bucket wins, at most `samples` of them: 120 x 5 s = the last
10 minutes; a failed poll is a None sample, a gap); and per device
the counters /metrics exports (polls, readings by quality, poll errors by kind, readings queued,
Modbus requests). The uplink's counterpart is `agent.uplink.stats`. Recording is O(1) per
reading under a lock held for microseconds; readers (`snapshot`) copy under the same lock and
never touch a device or the queue, so the page can never slow polling or publishing.
"""

from __future__ import annotations

import math
import threading
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.core.model import GOOD, Reading, Value

HISTORY_SAMPLES = 120
HISTORY_STEP_MS = 5_000


def numeric(value: Value) -> float | None:
    """The value as a number for a chart (a bool as 0/1), or None if it has none."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


@dataclass(slots=True)
class _Point:
    unit: str | None
    ts: int  # the latest reading, whatever its quality
    quality: str
    value: Value = None  # the last value read (a failed poll keeps it)
    value_ts: int | None = None
    changed_ts: int | None = None  # when `value` last became what it is
    history: deque[tuple[int, float | None]] = field(default_factory=deque)  # (bucket, value)


class DeviceRecent:
    """One device's recent readings and counters; written by its runner, read by anyone."""

    def __init__(self, source: object = None, samples: int | None = None,
                 step_ms: int | None = None) -> None:
        self._source = source  # the driver: its `requests` counter, where it keeps one
        self._samples = samples or HISTORY_SAMPLES  # the module's values at construction
        self._step = step_ms or HISTORY_STEP_MS
        self._lock = threading.Lock()
        self._points: dict[str, _Point] = {}
        self.polls = 0
        self.by_quality: Counter[str] = Counter()  # readings polled, by quality
        self.errors: Counter[str] = Counter()  # failed polls, by kind (the error's quality word)
        self.queued = 0  # readings written to the queue (after the reporting filter)
        self.requests: int | None = None  # Modbus requests made, if the driver counts them
        self.requests_last_poll: int | None = None

    def record(self, readings: Sequence[Reading]) -> Sequence[Reading]:
        """One poll's readings (before the reporting filter); returns them unchanged.

        On the hot path of every poll: one loop with the point's fields
        updated in place; `numeric` is inlined for the usual types."""
        total = getattr(self._source, "requests", None)
        with self._lock:
            self.polls += 1
            if isinstance(total, int):
                self.requests_last_poll = total - (self.requests or 0)
                self.requests = total
            self.by_quality.update([r.quality for r in readings])
            points, step = self._points, self._step
            for r in readings:
                p = points.get(r.metric)
                if p is None:
                    p = points[r.metric] = _Point(r.unit, r.ts, r.quality,
                                                  history=deque(maxlen=self._samples))
                value, ts, quality = r.value, r.ts, r.quality
                p.unit, p.ts, p.quality = r.unit, ts, quality
                sample: float | None = None
                if quality == GOOD or value is not None:
                    if (p.value_ts is None or value != p.value
                            or type(value) is not type(p.value)):
                        p.changed_ts = ts
                    p.value, p.value_ts = value, ts
                    kind = type(value)
                    if kind is float:
                        if value - value != 0:  # type: ignore[operator]  # NaN or infinite
                            continue  # nothing to chart
                        sample = value  # type: ignore[assignment]
                    elif kind is int or kind is bool:
                        sample = float(value)  # type: ignore[arg-type]
                    else:
                        continue  # a string: nothing to chart
                h, bucket = p.history, ts // step
                if h and h[-1][0] == bucket:
                    h[-1] = (bucket, sample)  # the newest in a bucket wins
                else:
                    h.append((bucket, sample))
        return readings

    def failed(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def count_queued(self, n: int) -> None:
        with self._lock:
            self.queued += n

    def counters(self) -> dict[str, Any]:
        """A consistent copy of the counters."""
        with self._lock:
            return {"polls": self.polls, "by_quality": dict(self.by_quality),
                    "errors": dict(self.errors), "queued": self.queued,
                    "requests": self.requests, "requests_last_poll": self.requests_last_poll}

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per point: unit, value (the last read), value_ts, changed_ts, ts and quality (of
        the latest reading), and `last`: the newest history sample [bucket, value] or None."""
        with self._lock:
            return {
                name: {"value": p.value, "unit": p.unit, "value_ts": p.value_ts,
                       "changed_ts": p.changed_ts, "ts": p.ts, "quality": p.quality,
                       "last": [p.history[-1][0], _short(p.history[-1][1])] if p.history
                       else None}
                for name, p in self._points.items()
            }

    def history(self, now_ms: int) -> dict[str, list[list[int | float | None]]]:
        """Per point the samples in the window ending at `now_ms`, as [[bucket - the bucket
        of now_ms (0 or less), value or None], ...], values to 5 significant digits."""
        now = now_ms // self._step
        with self._lock:  # copy only: the poll thread waits for this lock
            copies = {name: list(p.history) for name, p in self._points.items() if p.history}
        return {name: [[b - now, _short(v)] for b, v in h if b > now - self._samples]
                for name, h in copies.items()}


def _short(value: float | None) -> float | None:
    """Enough digits for a 30-pixel chart; fewer bytes on the wire. A value that rounding
    would push past the largest float (1.79765e308 -> inf, which JSON cannot carry) is kept."""
    if value is None:
        return None
    short = float(f"{value:.5g}")
    return short if math.isfinite(short) else value
