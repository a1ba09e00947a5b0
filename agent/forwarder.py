"""The loop between the queue and the uplink: take a batch, publish it, delete it on PUBACK.

It owns the in-flight table (message id -> seqs it carried) and the send cursor (highest seq
handed to the publisher). Acknowledgements arrive on paho's thread and are only recorded there;
this thread turns them into deletions, in one transaction per wake-up. When an acknowledgement
fails or never comes while connected (`ack_timeout`), the cursor rewinds to the oldest queued
row and the rows are sent again with the same seqs: duplicates are possible, loss is not.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from agent import log
from agent.contract import encode_telemetry, telemetry_topic
from agent.errors import PublishError, QueueError
from agent.model import QueuedReading
from agent.queue import Queue


class Uplink(Protocol):
    connected: threading.Event

    def publish(self, topic: str, payload: bytes, qos: int | None = None,
                retain: bool = False) -> int: ...


class Forwarder:
    """Moves readings from `queue` to `uplink` until stopped. Run `start()`, then `stop()`."""

    def __init__(self, queue: Queue, gateway: str, topic_prefix: str, batch_size: int,
                 max_inflight: int, ack_timeout: float = 60.0,
                 retry_delay: float = 1.0) -> None:
        self._queue = queue
        self._gateway = gateway
        self._prefix = topic_prefix
        self._batch_size = batch_size
        self._max_inflight = max_inflight
        self._ack_timeout = ack_timeout
        self._retry_delay = retry_delay
        self.uplink: Uplink | None = None
        self._acks: deque[tuple[int, bool]] = deque()
        self._inflight: dict[int, tuple[list[int], float]] = {}
        self._cursor = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = log.get("forward")
        self._episode = log.Episode(self._log, "forwarding failed", "forwarding resumed")
        self.published = 0  # readings acknowledged by the broker since start
        self.on_idle: Callable[[], None] | None = None  # tests: called when nothing is pending

    # called from other threads
    def notify(self) -> None:
        """New readings were queued (or the connection came back): look again."""
        self._wake.set()

    def on_ack(self, mid: int, ok: bool) -> None:
        """paho's thread: record only; the forwarder thread does the deleting."""
        self._acks.append((mid, ok))
        self._wake.set()

    def start(self) -> None:
        if self.uplink is None:
            raise RuntimeError("Forwarder.uplink must be set before start()")
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)
        self._thread.start()

    def stop(self, grace: float = 2.0) -> None:
        """Stop taking new batches; wait up to `grace` s for PUBACKs of what is in flight."""
        deadline = time.monotonic() + grace
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        while self._inflight and time.monotonic() < deadline:
            self._wake.wait(0.05)
            self._wake.clear()
            self._process_acks()
        self._process_acks()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    # the forwarder thread
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            try:
                self._process_acks()
                sent = self._send_some()
            except (QueueError, PublishError) as exc:
                self._episode.failed(type(exc).__name__, error=str(exc))
                self._stop.wait(self._retry_delay)
                continue
            if not sent:
                self._wake.wait(1.0)

    def _process_acks(self) -> None:
        done: list[int] = []
        failed = False
        while self._acks:
            mid, ok = self._acks.popleft()
            entry = self._inflight.pop(mid, None)
            if entry is None:
                continue  # a status message, or a message forgotten by a rewind
            if ok:
                done.extend(entry[0])
            else:
                failed = True
        if done:
            self._queue.ack(done)
            self.published += len(done)
            self._episode.recovered()
        if failed:
            self._episode.failed("refused", detail="broker refused a message; sending again")
            self._rewind()
            self._stop.wait(self._retry_delay)

    def _rewind(self) -> None:
        """Forget what is in flight and start again from the oldest queued row."""
        self._inflight.clear()
        self._cursor = 0

    def _send_some(self) -> bool:
        """Publish one window of rows; True if anything was sent."""
        assert self.uplink is not None
        if not self.uplink.connected.is_set():
            return False
        if self._inflight:
            oldest = min(t for _, t in self._inflight.values())
            if time.monotonic() - oldest > self._ack_timeout:
                self._episode.failed("ack_timeout", inflight=len(self._inflight))
                self._rewind()
        room = self._max_inflight - len(self._inflight)
        if room <= 0:
            return False
        rows = self._queue.take(self._cursor, self._batch_size * min(room, 8))
        if not rows:
            if not self._inflight and self.on_idle is not None:
                self.on_idle()
            return False
        by_device: dict[str, list[QueuedReading]] = {}
        for row in rows:
            by_device.setdefault(row.reading.device, []).append(row)
        now = time.monotonic()
        for device, batch in by_device.items():
            topic = telemetry_topic(self._prefix, self._gateway, device)
            for i in range(0, len(batch), self._batch_size):
                chunk = batch[i : i + self._batch_size]
                mid = self.uplink.publish(topic, encode_telemetry(self._gateway, device, chunk))
                self._inflight[mid] = ([q.seq for q in chunk], now)
        self._cursor = rows[-1].seq
        return True
