"""The core's wrapper around each driver: one `DeviceRunner` per configured device.

`DeviceRunner` owns everything a driver must not: opening on demand, exponential backoff (capped)
for a device that stops answering (each attempt is the re-probe), logging "device offline" once
and "device back online" when it answers, turning a failed poll into readings that say why
(`value=None`, quality = the error's word), applying the points' reporting rules
(`agent.polling.reporting`), and handing each poll's readings to the queue, which commits them
in one transaction in the background (`Queue.submit`: the worker polls on while the disk syncs; at
most `IN_COMMIT` polls of a device wait for a slow disk, none for one that stopped answering,
whose polls the queue keeps in memory; closing a runner waits for its last commit). When it runs
is the scheduler's (`agent.polling.scheduler`).
"""

from __future__ import annotations

import threading
import time
from collections import deque

from agent.core import log
from agent.core.errors import DriverError, QueueError
from agent.core.model import Reading, now_ms
from agent.polling.recent import DeviceRecent
from agent.polling.reporting import ReportFilter
from agent.queue import Queue, Receipt
from drivers.base import Driver, PointConfig

BACKOFF_MAX = 60.0
"""Longest wait between attempts at a device that stopped answering (seconds)."""
COMMIT_WAIT = 30.0
"""How long closing a runner waits for its last poll's commit (a locked or failing disk); not
at all once the commit is stalled (agent.queue.commit.STALL): the queue's close then commits
or counts it."""
IN_COMMIT = 64
"""Polls of one device that may wait for the disk at once; the next one waits for the oldest,
unless the disk stalled (`Receipt.wait_unless_stalled`): then polling goes on into the queue's
memory buffer. The queue commits the polls submitted within a few ms in one transaction and
bounds what waits in memory itself; enough polls in flight let a device polled back to back
fill each such transaction instead of waiting for the disk every few polls."""


class DeviceRunner:
    """Polls one driver and queues what it yields; never raises into the scheduler."""

    def __init__(self, driver: Driver, queue: Queue, backoff_max: float = BACKOFF_MAX) -> None:
        self.driver = driver
        self.name = driver.config.name
        self.interval = driver.config.interval
        self.align = driver.config.align  # polled at wall-clock multiples of the interval
        self._queue = queue
        self._backoff_max = max(backoff_max, self.interval)
        self._failures = 0
        self._next_attempt = 0.0
        self._open = False
        self._closed = False  # closed for good (stop, or removed by a reload)
        self._lock = threading.Lock()
        self._log = log.get("poll", self.name)
        self._device_ep = log.Episode(self._log, "device offline", "device back online")
        points = getattr(driver.config, "points", None) or []
        self.filter = ReportFilter([p for p in points if isinstance(p, PointConfig)])
        self.recent = DeviceRecent(driver)  # last values, history, counters: status page
        self._queue_ep = log.Episode(log.get("queue", self.name), "queue write failed",
                                     "queue write ok")
        self.polls = 0
        self.last_error: str | None = None
        self.last_error_ms: int | None = None
        self.last_ok_ms: int | None = None  # last poll that the device answered
        # progress marks for the watchdog (agent.systemd): in a beat since, last beat ended at
        self.busy_since: float | None = None
        self.beat_at = time.monotonic()
        self._writes: deque[Receipt] = deque()  # polls handed to the queue, newest last

    @property
    def online(self) -> bool:
        return self._failures == 0

    @property
    def state(self) -> str:
        """`online`, `offline` (failing), or `stale` (no answer for 3 intervals, e.g. not yet
        polled or a streaming sensor gone quiet)."""
        if self._failures:
            return "offline"
        if self.last_ok_ms is None or now_ms() - self.last_ok_ms > 3000 * max(self.interval, 1):
            return "stale"
        return "online"

    def poll_once(self) -> None:
        """One scheduled beat: poll (unless backing off), queue the readings."""
        self.busy_since = time.monotonic()
        try:
            self._beat()
        finally:
            self.busy_since = None
            self.beat_at = time.monotonic()

    def _beat(self) -> None:
        with self._lock:  # held until the readings are handed over: close() sees them
            if self._closed or time.monotonic() < self._next_attempt:
                return
            readings = self.filter.apply(self.recent.record(self._poll()))
            self.polls += 1
            if not readings:
                return
            if len(self._writes) >= IN_COMMIT:  # a device polled faster than the disk syncs
                self._writes.popleft().wait_unless_stalled(COMMIT_WAIT)  # is held back
            try:  # committed in the background: the worker goes back to its devices meanwhile
                self._writes.append(self._queue.submit(readings, self._queued))
            except QueueError as exc:
                self._queue_ep.failed("write", error=str(exc), lost=len(readings))

    def _queued(self, write: Receipt) -> None:
        """The queue committed (or failed to commit) one poll's readings."""
        if write.error is not None:
            self._queue_ep.failed("write", error=str(write.error), lost=write.count)
        else:
            self._queue_ep.recovered()
            self.recent.count_queued(write.count)

    def _poll(self) -> list[Reading]:
        try:
            if not self._open:
                self.driver.open()
                self._open = True
            readings = self.driver.poll()
        except DriverError as exc:
            return self._failed(exc)
        except Exception as exc:  # a driver bug must not stop the other devices
            self._log.exception("driver crashed", error=repr(exc))
            return self._failed(DriverError(f"driver crashed: {exc!r}"))
        if self._failures:
            self._device_ep.recovered()
        self.last_ok_ms = now_ms()
        self._failures = 0
        self._next_attempt = 0.0
        self.last_error = None
        return readings

    def _failed(self, exc: DriverError) -> list[Reading]:
        # A passive driver only parses what a core listener (agent.stream) heard: polling it
        # costs nothing, and the listener reopens the port with its own backoff, so it is
        # neither closed nor backed off here (its next poll says at once it is back).
        passive = bool(getattr(self.driver, "passive", False))
        if not passive:
            self.driver.close()
            self._open = False
        self._failures += 1
        self.last_error = str(exc)
        self.last_error_ms = now_ms()
        self.recent.failed(exc.quality)
        delay = self.interval if passive else min(self.interval * 2 ** (self._failures - 1),
                                                  self._backoff_max)
        self._next_attempt = time.monotonic() + delay - self.interval * 0.5
        self._device_ep.failed(exc.quality, error=str(exc), retry_in_s=round(delay, 2))
        ts = now_ms()
        return [Reading(self.name, metric, None, unit, ts, exc.quality)
                for metric, unit in self.driver.metrics()]

    def close(self) -> None:
        """Close the driver for good; waits for a poll in progress (whose readings are
        still queued). A beat already handed to a worker then does nothing."""
        with self._lock:
            self._closed = True
            self.driver.close()
            self._open = False
            last = self._writes[-1] if self._writes else None
        if last is not None and not last.wait_unless_stalled(COMMIT_WAIT):
            self._log.warning("last poll not yet committed", waited_s=COMMIT_WAIT)
