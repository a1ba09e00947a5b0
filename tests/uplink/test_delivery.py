"""Delivery the broker can vouch for, against real Mosquitto brokers set up as a platform's go
wrong: an ACL that denies the gateway's topics (MQTT 3.1.1 acknowledges and drops; MQTT 5
refuses with a reason code) and a `max_packet_size` below the agent's batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import structlog

from agent.service import health, metrics
from agent.sim.broker import LocalBroker
from agent.sim.modbus import ModbusSimulator
from agent.uplink import delivery
from tests.support import Collector, modbus_device, wait_until
from tests.uplink.test_uplink import _passwd

WRONG_ACL = ("user test-gw\ntopic write city/test-gw/status\ntopic write city/test-gw/health\n\n"
             "user platform\ntopic read city/#\n")  # status and health, telemetry forgotten
# (Mosquitto 2 closes a connection whose Last Will topic the ACL denies: a wrong gateway id in
# the ACL shows as a refused connection, which the agent already reports and survives.)
RIGHT_ACL = ("user test-gw\ntopic write city/test-gw/#\ntopic read city/test-gw/echo\n\n"
             "user platform\ntopic read city/#\n")


def _broker(tmp_path: Path, acl: str, *extra: str) -> tuple[LocalBroker, Path]:
    path = tmp_path / "acl"
    path.write_text(acl)
    broker = LocalBroker(tmp_path / "acl-broker", anonymous=False, listener_options=[
        f"password_file {_passwd(tmp_path, {'test-gw': 's3cret-gw', 'platform': 'p'})}",
        f"acl_file {path}", *extra])
    broker.start()
    return broker, path


def _password(tmp_path: Path) -> Path:
    secret = tmp_path / "pw"
    secret.write_text("s3cret-gw\n")
    secret.chmod(0o600)
    return secret


def _contiguous(seqs: set[int]) -> bool:
    return bool(seqs) and seqs == set(range(1, max(seqs) + 1))


def test_under_3_1_1_a_broker_that_drops_what_it_acknowledges_loses_nothing(
        tmp_path: Path, run_agent: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(delivery, "ECHO_TIMEOUT", 1.0)
    monkeypatch.setattr(delivery, "PROBE_AFTER", 0.1)
    secret = _password(tmp_path)
    broker, acl = _broker(tmp_path, WRONG_ACL)
    platform = Collector(broker.port, username="platform", password="p")
    try:
        with structlog.testing.capture_logs() as logs:
            agent = run_agent(broker.port, protocol="3.1.1", username="test-gw",
                              password_file=str(secret), health_interval="200ms")
            wait_until(lambda: agent.forwarder.delivery == "dropping", what="found dropping")
            depth = agent.queue.stats().depth
            assert depth > 0 and not platform.readings(), "PUBACKed, dropped, and kept"
            assert agent.queue_stats().depth >= depth
            assert any("acknowledges this gateway's messages but does not deliver" in e["event"]
                       for e in logs)
            assert health.snapshot(agent)["uplink"]["delivery"] == "dropping"
            assert "edge_agent_uplink_broker_dropping 1" in metrics.render(
                agent, health.snapshot(agent))
            acl.write_text(RIGHT_ACL)  # the technician fixes the ACL
            broker.reload()
            wait_until(lambda: agent.forwarder.delivery == "verified", timeout=20,
                       what="verified again")
            wait_until(lambda: _contiguous(platform.seqs()) and len(platform.seqs()) > depth,
                       timeout=20, what="every reading, the dropped ones included")
    finally:
        platform.stop()
        broker.stop()


def test_under_5_a_refusal_keeps_the_readings_and_says_why(
        tmp_path: Path, run_agent: Any) -> None:
    secret = _password(tmp_path)
    broker, acl = _broker(tmp_path, WRONG_ACL)
    platform = Collector(broker.port, username="platform", password="p")
    try:
        with structlog.testing.capture_logs() as logs:
            agent = run_agent(broker.port, username="test-gw", password_file=str(secret))
            wait_until(lambda: any(e.get("kind", "").startswith("refused: Not authorized")
                                   for e in logs), what="the refusal, with its reason code")
            assert agent.forwarder.delivery == "acknowledged" and agent.forwarder.check is None
            acl.write_text(RIGHT_ACL)
            broker.reload()
            wait_until(lambda: _contiguous(platform.seqs()) and len(platform.seqs()) > 20,
                       timeout=20, what="every reading once the ACL is fixed")
        refusals = [e for e in logs if e["event"] == "forwarding failed"]
        assert len(refusals) == 1, "logged once per episode"
        assert "(135)" in refusals[0]["kind"]
    finally:
        platform.stop()
        broker.stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_batches_obey_the_broker_packet_limit(tmp_path: Path, run_agent: Any,
                                              plc: ModbusSimulator, protocol: str) -> None:
    broker = LocalBroker(tmp_path / "small-broker", listener_options=["max_packet_size 3000"])
    broker.start()
    collector = Collector(broker.port)
    points = [{"name": f"r{i}", "table": "holding", "address": i} for i in range(60)]
    try:
        with structlog.testing.capture_logs() as logs:
            agent = run_agent(broker.port, protocol=protocol,
                              devices=[modbus_device("plc", plc.port, interval="50ms",
                                                     points=points)])
            wait_until(lambda: len(collector.seqs()) > 600 and _contiguous(collector.seqs()),
                       timeout=30, what="readings in messages the broker takes")
        assert max(len(m["readings"]) for m in collector.telemetry()) < 60
        if protocol == "5":
            assert agent.publisher.max_packet == 3000 and agent.publisher.reconnects == 0
        else:  # nothing tells a 3.1.1 client: a cut connection halves the messages
            assert agent.publisher.reconnects <= 4
            assert [e for e in logs if e["event"] == "message size limited"]
    finally:
        collector.stop()
        broker.stop()
