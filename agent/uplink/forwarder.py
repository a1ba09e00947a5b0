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
and is re-sent with the same seqs: duplicates are possible, loss is not. A refusal's reason code
(MQTT 5) is logged once per episode. Under MQTT 3.1.1, where a broker acknowledges what it
drops, acknowledged readings are deleted only once `agent.uplink.delivery.EchoCheck` vouched
for them. Messages stay within what the broker takes: `max_payload`, the Maximum Packet Size
its CONNACK advertises (MQTT 5), and half the largest message in flight when a connection died
with it (a broker's `max_packet_size` says nothing under 3.1.1); a single reading larger than
that is counted as dropped, never retried for ever.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from agent.config.mqtt import MqttConfig
from agent.core import log
from agent.core.clock import corrector, current
from agent.core.errors import PublishError, QueueError
from agent.core.model import DEVICE, SEQ, UNSYNCED, Row, now_ms
from agent.queue import Queue, Receipt
from agent.uplink.contract import encode_senml, encode_telemetry, telemetry_topic
from agent.uplink.delivery import EchoCheck
from agent.uplink.stats import PublishStats

ACK_COMMIT_WAIT = 10.0
"""How long a rewind waits for the queue to commit the deletion of acknowledged readings."""
MIN_PAYLOAD = 1024
"""The smallest message limit halving goes down to (a reading is about 100 bytes)."""
PACKET_OVERHEAD = 16
"""MQTT fixed header, message id and property bytes around a PUBLISH's topic and payload."""


class PublisherLike(Protocol):
    """What the forwarder needs of the `agent.uplink.publisher.Publisher` (tests use a fake)."""

    connected: threading.Event
    verifies: bool  # MQTT 3.1.1 with verify_delivery: PUBACKs prove nothing
    echo_topic: str
    max_packet: int | None  # the broker's Maximum Packet Size, when it said

    def publish(self, topic: str, payload: bytes, qos: int | None = None,
                retain: bool = False) -> int: ...

    def listen(self, on_ack: Callable[[int, str | None], None],
               on_connect: Callable[[], None] | None = None,
               on_disconnect: Callable[[], None] | None = None,
               on_echo: Callable[[bytes], None] | None = None) -> None: ...

    def forget(self, mids: Sequence[int]) -> None: ...

    def subscribe_echo(self) -> None: ...


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
        self._payload_limit = cfg.max_payload  # lowered when the broker cut a large message
        self._delivery_was_down = False
        self._linger = cfg.linger
        self._linger_since: float | None = None
        self._encode = encode_senml if cfg.encoding == "senml" else encode_telemetry
        self._ack_timeout = max(30.0, 2 * cfg.keepalive)
        self._retry_delay = cfg.reconnect_min
        self.publisher = publisher
        self._acks: deque[tuple[int, str | None]] = deque()
        self._acked: Receipt | None = None  # the last deletion handed to the queue
        self._inflight: dict[int, tuple[list[int], float, int]] = {}  # seqs, sent at, bytes
        self._dropped = threading.Event()  # the connection was lost: look at what was in flight
        self._limit_log = log.Episode(log.get("forward"), "message size limited",
                                      "message size restored")
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
        self.check: EchoCheck | None = None
        if publisher.verifies:
            echo = publisher.echo_topic
            self.check = EchoCheck(gateway, lambda body, again: self._probe(echo, body, again))
        publisher.listen(on_ack=self.on_ack, on_connect=self.reconnected,
                         on_disconnect=self.disconnected,
                         on_echo=self.check.echo if self.check else None)

    # called from other threads
    def notify(self) -> None:
        """New readings were queued (or the connection came back): look again."""
        self._wake.set()

    def on_ack(self, mid: int, refused: str | None) -> None:
        """paho's thread: record only; the forwarder thread does the deleting."""
        self._acks.append((mid, refused))
        self._wake.set()

    def disconnected(self) -> None:
        """paho's thread: the connection was lost. Only flags it; the loop looks."""
        self._dropped.set()
        self._wake.set()

    @property
    def delivery(self) -> str:
        """`acknowledged` (MQTT 5: the broker's PUBACK says), or under 3.1.1 `unchecked`,
        `verified` or `dropping` (the broker acknowledges but does not deliver)."""
        return self.check.state if self.check else "acknowledged"

    def _probe(self, topic: str, body: bytes, subscribe: bool) -> None:
        if subscribe:
            self.publisher.subscribe_echo()
        self.publisher.publish(topic, body, qos=1)

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
                if self._dropped.is_set():
                    self._apply_disconnect()
                if self._reconnected.is_set():
                    self._apply_reconnect()
                self._process_acks()
                self._verify()
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
                if self.check is not None:
                    delay = min(delay, self.check.next_wake())
                self._wake.wait(delay)

    def _process_acks(self) -> None:
        done: list[int] = []
        refusal: str | None = None
        while self._acks:
            mid, refused = self._acks.popleft()
            entry = self._inflight.pop(mid, None)
            if entry is None:
                continue  # a status message, or a message forgotten by a rewind
            self.stats.acked(mid, refused is None)
            if refused is None:
                done.extend(entry[0])
            else:
                refusal = refused
        if done:
            if self.check is not None:
                self.check.hold(done)  # deleted once a probe after them came back
            else:
                self._acked = self._queue.ack(done)
            self.published += len(done)
            self.last_ack_ms = now_ms()
            self._episode.recovered()
        if refusal is not None:
            self._episode.failed(f"refused: {refusal}", reason=refusal, detail="the broker "
                                 "refused a message (its ACL?); the readings stay queued and "
                                 "are sent again")
            self._rewind()
            self._stop.wait(self._retry_delay)

    def _verify(self) -> None:
        """MQTT 3.1.1: delete what a returned probe vouched for; say so when none returns."""
        if self.check is None:
            return
        released, dropping = self.check.tick()
        if released:
            self._acked = self._queue.ack(released)
        if dropping:
            self._log.error("the broker acknowledges this gateway's messages but does not "
                            "deliver them (MQTT 3.1.1 cannot refuse a publish): check the "
                            "broker's ACL for this gateway's topics and that it may read "
                            f"{self.publisher.echo_topic}, or use mqtt.protocol: 5; nothing it "
                            "dropped is deleted: sending resumes when a probe comes back",
                            held=self.check.held)
            self._rewind()
        elif self._delivery_was_down and not self.check.blocked:
            self._log.info("the broker delivers this gateway's messages again")
        self._delivery_was_down = self.check.blocked

    def _rewind(self) -> None:
        """Forget what is in flight; everything still queued becomes backlog to send again
        (once the deletions of what was acknowledged are committed: not sent twice)."""
        self._inflight.clear()
        if self.check is not None:
            self.check.reset()  # held readings are still queued: sent again
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

    def _apply_disconnect(self) -> None:
        """A connection died with messages in flight: if one was large, the broker may have
        closed it for the size (Mosquitto's max_packet_size says nothing under 3.1.1). Halve
        the limit below the largest, drop those messages from paho (it would resend them and
        be cut off again), and send their readings again in smaller messages."""
        self._dropped.clear()
        largest = max((size for _, _, size in self._inflight.values()), default=0)
        if largest <= MIN_PAYLOAD or self.publisher.max_packet is not None:
            return
        self._payload_limit = max(MIN_PAYLOAD, largest // 2)
        self._limit_log.failed("halved", largest=largest, limit=self._payload_limit,
                               detail="the connection died with a large message in flight: "
                               "the broker's max_packet_size? messages are now smaller")
        self.publisher.forget(list(self._inflight))
        self._rewind()

    def _limit(self, topic: str) -> int:
        """The largest payload a message to `topic` may have now."""
        limit = min(self._max_payload, self._payload_limit)
        if self.publisher.max_packet:
            limit = min(limit, self.publisher.max_packet - len(topic.encode()) - PACKET_OVERHEAD)
        return limit

    def _send_some(self) -> bool:
        """Publish live rows first, then backlog within the rate cap; True if anything went."""
        if not self.publisher.connected.is_set() or (self.check and self.check.blocked):
            return False
        if self._inflight:
            oldest = min(t for _, t, _ in self._inflight.values())
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
        """One message; halved until it fits the limit. A single reading that does not fit
        can never be delivered: it is counted as dropped, with a log line."""
        payload = self._encode(self._gateway, device, chunk, historical, fix)
        limit = self._limit(topic)
        if len(payload) > limit:
            if len(chunk) > 1:
                half = len(chunk) // 2
                self._send(topic, device, chunk[:half], historical, fix)
                self._send(topic, device, chunk[half:], historical, fix)
                return
            self._queue.discard([chunk[0][SEQ]], f"a {len(payload):,}-byte message is larger "
                                f"than the broker takes ({limit:,} bytes)")
            return
        mid = self.publisher.publish(topic, payload)
        self._inflight[mid] = ([row[SEQ] for row in chunk], time.monotonic(), len(payload))
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
