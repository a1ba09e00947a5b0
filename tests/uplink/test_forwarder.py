"""The backlog rate cap, on a clock the test moves; a backlog that is evicted while it drains."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from structlog.testing import capture_logs

from agent.config.mqtt import MqttConfig
from agent.core.model import Reading
from agent.queue import Queue
from agent.uplink.forwarder import Forwarder, TokenBucket
from tests.support import wait_until


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

    def __init__(self, verifies: bool = False, max_packet: int | None = None) -> None:
        self.connected = threading.Event()
        self.connected.set()
        self.verifies, self.max_packet, self.echo_topic = verifies, max_packet, "city/gw/echo"
        self.sent: dict[int, list[int]] = {}  # mid -> seqs carried
        self.probes: list[bytes] = []
        self.forgotten: list[int] = []
        self._mid = 0

    def publish(self, topic: str, payload: bytes, qos: int | None = None,
                retain: bool = False) -> int:
        self._mid += 1
        if topic == self.echo_topic:
            self.probes.append(payload)
        else:
            self.sent[self._mid] = [r["seq"] for r in json.loads(payload)["readings"]]
        return self._mid

    def listen(self, on_ack: Callable[[int, str | None], None],
               on_connect: Callable[[], None] | None = None,
               on_disconnect: Callable[[], None] | None = None,
               on_echo: Callable[[bytes], None] | None = None) -> None:
        pass  # the test calls the forwarder's on_ack itself

    def forget(self, mids: Sequence[int]) -> None:
        self.forgotten.extend(mids)

    def subscribe_echo(self) -> None:
        pass


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
        f.on_ack(mid, None)
    f._process_acks()
    before = set(uplink.sent)
    assert f._send_some()
    after = [s for mid, seqs in uplink.sent.items() if mid not in before for s in seqs]
    assert after and min(after) == 3001, "an evicted reading was sent"
    while f._send_some() or f.inflight:  # drain the rest, acknowledging as the broker would
        for mid in list(f._inflight):
            f.on_ack(mid, None)
        f._process_acks()
    sent = sorted(s for seqs in uplink.sent.values() for s in seqs)
    assert sent == list(range(1, 2001)) + list(range(3001, 5001))  # each once, none evicted
    f.stop()
    q.close()


def _drain(f: Forwarder, uplink: FakePublisher) -> None:
    """Send what there is and acknowledge it, as a 3.1.1 broker does whatever it does next."""
    while f._send_some() or f.inflight:
        for mid in list(f._inflight):
            f.on_ack(mid, None)
        f._process_acks()


def test_under_3_1_1_acknowledged_readings_wait_for_the_echo(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    q.put([Reading("plc", "m", i, None, i) for i in range(50)])
    uplink = FakePublisher(verifies=True)
    f = Forwarder(q, "gw", MqttConfig(host="127.0.0.1", linger=0, protocol="3.1.1"), uplink)
    assert f.check is not None and f.delivery == "unchecked"
    f.check.probe_after, f.check.timeout = 0.0, 0.2
    f._rewind()
    _drain(f, uplink)
    q.flush()
    assert q.stats().depth == 50, "a PUBACK alone deletes nothing under 3.1.1"
    f._verify()  # the probe goes out after them...
    [probe] = uplink.probes
    f.check.echo(probe)  # ...and comes back: the broker delivers
    f._verify()
    q.flush()
    assert q.stats().depth == 0 and f.delivery == "verified"
    q.put([Reading("plc", "m", i, None, i) for i in range(50, 60)])
    _drain(f, uplink)
    f._verify()  # a probe, never echoed: an ACL that drops what it acknowledges
    wait_until(lambda: (f._verify(), f.delivery == "dropping")[1], what="found dropping")
    q.flush()
    assert q.stats().depth == 10 and not f._send_some(), "kept, and nothing sent meanwhile"
    f._verify()
    f.check.echo(uplink.probes[-1])  # the ACL is fixed: a probe comes back
    f._verify()
    assert f.delivery == "verified"
    _drain(f, uplink)
    f._verify()
    f.check.echo(uplink.probes[-1])
    f._verify()
    q.flush()
    assert q.stats().depth == 0
    times = Counter(s for seqs in uplink.sent.values() for s in seqs)
    assert all(times[s] == 2 for s in range(51, 61)), "what the broker dropped was sent again"
    f.stop()
    q.close()


def test_a_reading_larger_than_the_broker_takes_is_dropped_and_counted(tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    q.put([Reading("plc", "text", "x" * 2000, None, 1), Reading("plc", "m", 2, None, 2)])
    uplink = FakePublisher(max_packet=1200)
    f = Forwarder(q, "gw", MqttConfig(host="127.0.0.1", linger=0), uplink)
    f._rewind()
    with capture_logs() as logs:
        _drain(f, uplink)
    q.flush()
    assert [s for seqs in uplink.sent.values() for s in seqs] == [2]
    assert q.stats().depth == 0 and q.stats().dropped == 1
    [line] = [e for e in logs if e["event"] == "readings dropped: they can never be delivered"]
    assert "larger than the broker takes (1,163 bytes)" in line["why"]
    f.stop()
    q.close()


def test_a_connection_lost_with_a_large_message_in_flight_halves_the_messages(
        tmp_path: Path) -> None:
    q = Queue(tmp_path / "q.db")
    q.put([Reading("plc", f"m{i}", i, None, i) for i in range(300)])
    uplink = FakePublisher()
    f = Forwarder(q, "gw", MqttConfig(host="127.0.0.1", linger=0, protocol="3.1.1",
                                      verify_delivery=False), uplink)
    f._rewind()
    assert f._send_some()
    largest = max(size for _, _, size in f._inflight.values())
    inflight = set(f._inflight)
    f.disconnected()  # what Mosquitto's max_packet_size does under 3.1.1: close, say nothing
    f._apply_disconnect()
    assert set(uplink.forgotten) == inflight, "paho must not resend them"
    assert f._payload_limit == largest // 2
    before = set(uplink.sent)
    _drain(f, uplink)
    q.flush()
    assert q.stats().depth == 0
    assert sorted(s for mid, seqs in uplink.sent.items() if mid not in before
                  for s in seqs) == list(range(1, 301))
    f.stop()
    q.close()
