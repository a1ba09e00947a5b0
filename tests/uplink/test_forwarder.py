"""The backlog rate cap, on a clock the test moves; a backlog that is evicted while it drains."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

from agent.config.mqtt import MqttConfig
from agent.core.model import Reading
from agent.queue import Queue
from agent.uplink.forwarder import Forwarder, TokenBucket


def test_token_bucket_caps_backlog_readings_per_second() -> None:
    now = [100.0]
    bucket = TokenBucket(500, clock=lambda: now[0])
    assert bucket.available() == 500  # one second's worth to start
    bucket.spend(500)
    assert bucket.available() == 0 and bucket.wait_time() > 0
    now[0] += 0.1
    assert bucket.available() == 50
    bucket.spend(50)
    now[0] += 10  # idle: the burst never exceeds one second's worth
    assert bucket.available() == 500
    sent = 0
    for _ in range(100):  # ten simulated seconds of draining as fast as allowed
        now[0] += 0.1
        n = bucket.available()
        bucket.spend(n)
        sent += n
    assert 5000 <= sent <= 5000 + 500


def test_no_cap_means_no_wait() -> None:
    bucket = TokenBucket(0)
    assert bucket.available() >= 2**31 - 1 and bucket.wait_time() == 0


class FakePublisher:
    """Records what the forwarder publishes; acknowledges only when the test says so."""

    def __init__(self) -> None:
        self.connected = threading.Event()
        self.connected.set()
        self.sent: dict[int, list[int]] = {}  # mid -> seqs carried
        self._mid = 0

    def publish(self, topic: str, payload: bytes, qos: int | None = None,
                retain: bool = False) -> int:
        self._mid += 1
        self.sent[self._mid] = [r["seq"] for r in json.loads(payload)["readings"]]
        return self._mid

    def listen(self, on_ack: Callable[[int, bool], None],
               on_connect: Callable[[], None] | None = None) -> None:
        pass  # the test calls the forwarder's on_ack itself


def test_readings_evicted_while_the_backlog_drains_are_not_sent(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    for k in range(10):  # 5,000 readings queued while offline
        q.put([Reading("plc", "m", 500 * k + i, None, 500 * k + i) for i in range(500)])
    uplink = FakePublisher()
    f = Forwarder(q, "gw", MqttConfig(host="127.0.0.1", linger=0), uplink)
    f._rewind()  # all of it is backlog
    assert f._send_some()  # 20 messages in flight: seqs 1..2000
    assert sorted(s for seqs in uplink.sent.values() for s in seqs) == list(range(1, 2001))
    q._bounds.evict_oldest(3000, "max_bytes")  # the disk filled: 1..3000 are evicted, unsent or not
    for mid in list(uplink.sent):
        f.on_ack(mid, True)
    f._process_acks()
    before = set(uplink.sent)
    assert f._send_some()
    after = [s for mid, seqs in uplink.sent.items() if mid not in before for s in seqs]
    assert after and min(after) == 3001, "an evicted reading was sent"
    while f._send_some() or f.inflight:  # drain the rest, acknowledging as the broker would
        for mid in list(f._inflight):
            f.on_ack(mid, True)
        f._process_acks()
    sent = sorted(s for seqs in uplink.sent.values() for s in seqs)
    assert sent == list(range(1, 2001)) + list(range(3001, 5001))  # each once, none evicted
    f.stop()
    q.close()
