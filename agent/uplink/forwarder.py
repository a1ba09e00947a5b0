"""The loop between the queue and the uplink: take a batch, publish it, delete it on PUBACK.

It owns the in-flight table (message id -> seqs it carried) and two send positions: live rows
(queued while connected, seq > `_live_after`) go first; backlog (rows queued while the uplink
was down or before this start, kept as seq spans) drains beside them, flagged `historical`,
within an optional readings/s cap so a fleet reconnecting at once does not flatten the platform.
Within each stream a device's readings leave in seq order; live rows come from the queue's
memory of its last commits (`take(live=True)`), backlog from the file. Acknowledgements arrive
on paho's thread and are only recorded there; this thread hands them to the queue, whose
committer deletes them in its next transaction (`ack`). When an acknowledgement fails
or never comes while connected (`ack_timeout`), everything still queued becomes backlog again
and is re-sent with the same seqs: duplicates are possible, loss is not.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from agent.config.mqtt import MqttConfig
from agent.core import log
from agent.core.clock import corrector, current
from agent.core.errors import PublishError, QueueError
from agent.core.model import DEVICE, SEQ, UNSYNCED, Row, now_ms
from agent.queue import Queue, Receipt
from agent.uplink.contract import encode_senml, encode_telemetry, telemetry_topic
from agent.uplink.stats import PublishStats

ACK_COMMIT_WAIT = 10.0
"""How long a rewind waits for the queue to commit the deletion of acknowledged readings."""


class PublisherLike(Protocol):
    """What the forwarder needs of the `agent.uplink.publisher.Publisher` (tests use a fake)."""

    connected: threading.Event

    def publish(self, topic: str, payload: bytes, qos: int | None = None,
                retain: bool = False) -> int: ...

    def listen(self, on_ack: Callable[[int, bool], None],
               on_connect: Callable[[], None] | None = None) -> None: ...


class Forwarder:
    """Moves readings from `queue` to `publisher` until stopped. Run `start()`, then `stop()`.

    It tells `publisher` at once that it wants its PUBACKs and (re)connects, so both are wired
    when it is built: make the publisher first, then the forwarder with it.
    """

    def __init__(self, queue: Queue, gateway: str, cfg: MqttConfig, publisher: PublisherLike,
                 backlog_rate: float = 0) -> None:
        self._queue = queue
        self._gateway = gateway
        self._prefix = cfg.topic_prefix
        self._batch_size = cfg.batch_size
        self._max_inflight = cfg.max_inflight
        self._max_payload = cfg.max_payload
        self._linger = cfg.linger
        self._linger_since: float | None = None
        self._encode = encode_senml if cfg.encoding == "senml" else encode_telemetry
        self._ack_timeout = max(30.0, 2 * cfg.keepalive)
        self._retry_delay = cfg.reconnect_min
        self.publisher = publisher
        self._acks: deque[tuple[int, bool]] = deque()
        self._acked: Receipt | None = None  # the last deletion handed to the queue
        self._inflight: dict[int, tuple[list[int], float]] = {}
        self._live_after = 0  # live rows: seq > _live_after
        self._backlog: list[list[int]] = []  # [after, before) seq spans still to send, oldest first
        self._bucket = TokenBucket(backlog_rate)
        self._wake = threading.Event()
        self._reconnected = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log = log.get("forward")
        self._episode = log.Episode(self._log, "forwarding failed", "forwarding resumed")
        self.published = 0  # readings acknowledged by the broker since start
        self.last_ack_ms: int | None = None  # when the last telemetry PUBACK was processed
        self.loop_at = time.monotonic()  # the loop last went round: the watchdog's progress mark
        self.stats = PublishStats()  # per device and latency, for /metrics
        publisher.listen(on_ack=self.on_ack, on_connect=self.reconnected)

    # called from other threads
    def notify(self) -> None:
        """New readings were queued (or the connection came back): look again."""
        self._wake.set()

    def on_ack(self, mid: int, ok: bool) -> None:
        """paho's thread: record only; the forwarder thread does the deleting."""
        self._acks.append((mid, ok))
        self._wake.set()

    def start(self) -> None:
        self._rewind()  # what the last run left queued is backlog
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
            self.loop_at = time.monotonic()
            try:
                if self._reconnected.is_set():
                    self._apply_reconnect()
                self._process_acks()
                sent = self._send_some()
            except (QueueError, PublishError) as exc:
                self._episode.failed(type(exc).__name__, error=str(exc))
                self._stop.wait(self._retry_delay)
                continue
            if not sent:
                delay = 1.0
                if self._backlog and self._bucket.wait_time() > 0:
                    delay = max(0.005, self._bucket.wait_time())
                if self._linger_since is not None:
                    left = self._linger - (time.monotonic() - self._linger_since)
                    delay = min(delay, max(0.001, left))
                self._wake.wait(delay)

    def _process_acks(self) -> None:
        done: list[int] = []
        failed = False
        while self._acks:
            mid, ok = self._acks.popleft()
            entry = self._inflight.pop(mid, None)
            if entry is None:
                continue  # a status message, or a message forgotten by a rewind
            self.stats.acked(mid, ok)
            if ok:
                done.extend(entry[0])
            else:
                failed = True
        if done:
            self._acked = self._queue.ack(done)
            self.published += len(done)
            self.last_ack_ms = now_ms()
            self._episode.recovered()
        if failed:
            self._episode.failed("refused", detail="broker refused a message; sending again")
            self._rewind()
            self._stop.wait(self._retry_delay)

    def _rewind(self) -> None:
        """Forget what is in flight; everything still queued becomes backlog to send again
        (once the deletions of what was acknowledged are committed: not sent twice)."""
        self._inflight.clear()
        if self._acked is not None:
            self._acked.wait(ACK_COMMIT_WAIT)
        boundary = self._queue.stats().next_seq
        self._backlog = [[0, boundary]]
        self._live_after = boundary - 1

    def reconnected(self) -> None:
        """paho's thread: the uplink (re)connected. Only flags it; the loop applies it."""
        self._reconnected.set()
        self._wake.set()

    def _apply_reconnect(self) -> None:
        """Rows queued since the last send and not yet sent become backlog (historical)."""
        self._reconnected.clear()
        boundary = self._queue.stats().next_seq
        if boundary - 1 > self._live_after:
            self._backlog.append([self._live_after, boundary])
        self._live_after = max(self._live_after, boundary - 1)

    def _send_some(self) -> bool:
        """Publish live rows first, then backlog within the rate cap; True if anything went."""
        if not self.publisher.connected.is_set():
            return False
        if self._inflight:
            oldest = min(t for _, t in self._inflight.values())
            if time.monotonic() - oldest > self._ack_timeout:
                self._episode.failed("ack_timeout", inflight=len(self._inflight))
                self._rewind()
        sent = False
        room = self._max_inflight - len(self._inflight)
        if room > 0:
            rows = self._queue.take(self._live_after, self._batch_size * min(room, 8),
                                    live=True)
            if rows and len(rows) < self._batch_size and self._linger:
                # a part-filled batch may wait `linger` for more readings: fewer, fuller messages
                now = time.monotonic()
                self._linger_since = self._linger_since or now
                if now - self._linger_since < self._linger:
                    rows = []
            if rows:
                self._linger_since = None
                self._publish(rows, historical=False)
                self._live_after = rows[-1][SEQ]
                sent = True
        while self._backlog and self._max_inflight - len(self._inflight) > 0:
            budget = self._bucket.available()
            if budget < 1:
                break
            room = self._max_inflight - len(self._inflight)
            span = self._backlog[0]
            rows = self._queue.take(span[0], min(self._batch_size * min(room, 8), budget),
                                    before_seq=span[1])
            if not rows:
                self._backlog.pop(0)
                continue
            self._publish(rows, historical=True)
            self._bucket.spend(len(rows))
            span[0] = rows[-1][SEQ]
            sent = True
        return sent

    def _publish(self, rows: list[Row], historical: bool) -> None:
        by_device: dict[str, list[Row]] = {}
        for row in rows:
            by_device.setdefault(row[DEVICE], []).append(row)
        fix = corrector(current()) if any(row[UNSYNCED] for row in rows) else None
        for device, batch in by_device.items():
            topic = telemetry_topic(self._prefix, self._gateway, device)
            for i in range(0, len(batch), self._batch_size):
                self._send(topic, device, batch[i : i + self._batch_size], historical, fix)

    def _send(self, topic: str, device: str, chunk: list[Row], historical: bool,
              fix: Callable[[int, str], tuple[int, str]] | None) -> None:
        """One message; halved until it fits `max_payload` (a single reading always goes)."""
        payload = self._encode(self._gateway, device, chunk, historical, fix)
        if len(payload) > self._max_payload and len(chunk) > 1:
            half = len(chunk) // 2
            self._send(topic, device, chunk[:half], historical, fix)
            self._send(topic, device, chunk[half:], historical, fix)
            return
        mid = self.publisher.publish(topic, payload)
        self._inflight[mid] = ([row[SEQ] for row in chunk], time.monotonic())
        self.stats.sent(mid, device, len(chunk))


class TokenBucket:
    """Readings per second, with a burst of one second's worth; rate 0 means no cap."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self._clock = clock
        self._tokens = rate
        self._at = clock()

    def available(self) -> int:
        if not self.rate:
            return 2**31
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate)
        self._at = now
        return int(self._tokens + 1e-9)  # 0.1 s x 500/s is 49.99999...

    def spend(self, n: int) -> None:
        if self.rate:
            self._tokens -= n

    def wait_time(self) -> float:
        """Seconds until one token is available (0 if uncapped or available now)."""
        if not self.rate or self._tokens >= 1:
            return 0.0
        return (1 - self._tokens) / self.rate
