"""What the uplink counts for /metrics: messages sent and acknowledged, and their latency.

This module owns `PublishStats`: readings acknowledged per device, messages the broker refused,
and the publish->PUBACK latency of each message as a histogram (`LATENCY_BUCKETS`). Recording
is O(1) under a lock held for microseconds; `counters` copies under the same lock.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Upper bounds (seconds) of the publish latency histogram's buckets (+Inf is implied)."""


class PublishStats:
    """Telemetry messages sent and acknowledged, per device, with publish->PUBACK latency.

    The forwarder calls `sent` after handing a message to the uplink and `acked` when it
    processes its acknowledgement; message ids it forgot (a rewind) simply never come back and
    fall out of the bounded table of messages in flight.
    """

    MAX_TRACKED = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[int, tuple[str, int, float]] = {}
        self.published: Counter[str] = Counter()  # readings acknowledged, by device
        self.refused = 0  # messages the broker refused
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)  # cumulative later, per bucket here
        self.latency_sum = 0.0
        self.latency_count = 0

    def sent(self, mid: int, device: str, readings: int) -> None:
        with self._lock:
            self._inflight.pop(mid, None)  # a reused id: the old message is long forgotten
            self._inflight[mid] = (device, readings, time.monotonic())
            if len(self._inflight) > self.MAX_TRACKED:
                del self._inflight[next(iter(self._inflight))]

    def acked(self, mid: int, ok: bool) -> None:
        with self._lock:
            entry = self._inflight.pop(mid, None)
            if entry is None:
                return
            if not ok:
                self.refused += 1
                return
            device, readings, t0 = entry
            self.published[device] += readings
            seconds = time.monotonic() - t0
            self.latency_sum += seconds
            self.latency_count += 1
            i = next((i for i, b in enumerate(LATENCY_BUCKETS) if seconds <= b),
                     len(LATENCY_BUCKETS))
            self.buckets[i] += 1

    def counters(self) -> dict[str, Any]:
        with self._lock:
            return {"published": dict(self.published), "refused": self.refused,
                    "buckets": list(self.buckets), "sum": self.latency_sum,
                    "count": self.latency_count}
