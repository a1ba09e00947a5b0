"""The uplink against real Mosquitto brokers set up like a platform's: TLS with a CA made here,
mutual TLS, a password file, an ACL; MQTT 3.1.1 and 5; causes of refusal named in the agent's
own words while polling and queueing go on; health messages; a clock that jumps."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from agent.config.load import load_config
from agent.config.mqtt import MqttConfig
from agent.core.clock import ManualClock, use
from agent.core.errors import ConfigError
from agent.service.runtime import Agent
from agent.sim.broker import LocalBroker
from agent.uplink.publisher import Publisher
from tests.peers.pki import Pki, make_pki
from tests.support import EDGE_AGENT, Collector, modbus_device, wait_until, write_config


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_broker(tmp_path: Path, pki: Pki, cert: Path | None = None, *extra: str) -> LocalBroker:
    b = LocalBroker(tmp_path / "tls-broker", listener_options=[
        f"cafile {pki.ca}", f"certfile {cert or pki.server_cert}", f"keyfile {pki.server_key}",
        *extra])
    b.start()
    return b


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_delivery_over_verified_tls(tmp_path: Path, pki: Pki, run_agent: Any,
                                    protocol: str) -> None:
    broker = tls_broker(tmp_path, pki)
    collector = Collector(broker.port, ca=pki.ca)
    try:
        run_agent(broker.port, protocol=protocol, tls={"ca_file": str(pki.ca)},
                  health_interval="200ms")
        wait_until(lambda: len(collector.readings()) >= 10, what="readings over TLS")
        wait_until(lambda: len(collector.healths()) >= 2, what="health messages")
        health = collector.healths()[-1]
        assert health["devices"]["plc"]["state"] in ("online", "stale")
        assert health["uplink"]["connected"] is True
        assert not collector.invalid
    finally:
        collector.stop()
        broker.stop()


def _refused(agent: Agent, words: str) -> str:
    wait_until(lambda: agent.publisher.attempts >= 3, what="several connection attempts")
    error = agent.publisher.last_error or ""
    assert words in error, error
    assert not agent.publisher.connected.is_set()
    assert agent.queue.stats().depth > 0, "polling and queueing go on while refused"
    return error


def test_unknown_ca_is_named_and_retried(tmp_path: Path, pki: Pki, run_agent: Any) -> None:
    broker = tls_broker(tmp_path, pki)
    try:
        with structlog.testing.capture_logs() as logs:
            agent = run_agent(broker.port, tls={"ca_file": str(pki.other_ca)},
                              reconnect_min="100ms", reconnect_max="200ms")
            _refused(agent, "certificate is not trusted")
        downs = [e for e in logs if e["event"] == "uplink down"]
        assert len(downs) == 1, "a repeating failure is logged once"
    finally:
        broker.stop()


def test_expired_broker_certificate_is_named(tmp_path: Path, pki: Pki, run_agent: Any) -> None:
    broker = tls_broker(tmp_path, pki, pki.expired_cert)
    try:
        agent = run_agent(broker.port, tls={"ca_file": str(pki.ca)}, reconnect_min="100ms",
                          reconnect_max="200ms")
        _refused(agent, "certificate has expired")
    finally:
        broker.stop()


def test_mutual_tls(tmp_path: Path, pki: Pki, run_agent: Any) -> None:
    broker = tls_broker(tmp_path, pki, None, "require_certificate true")
    collector = Collector(broker.port, ca=pki.ca, cert=pki.client_cert, key=pki.client_key)
    try:
        run_agent(broker.port, tls={"ca_file": str(pki.ca), "cert_file": str(pki.client_cert),
                                    "key_file": str(pki.client_key)})
        wait_until(lambda: len(collector.readings()) >= 5, what="readings over mutual TLS")
    finally:
        collector.stop()
        broker.stop()


def test_missing_client_certificate_is_named(tmp_path: Path, pki: Pki, run_agent: Any) -> None:
    broker = tls_broker(tmp_path, pki, None, "require_certificate true")
    try:
        agent = run_agent(broker.port, tls={"ca_file": str(pki.ca)}, reconnect_min="100ms",
                          reconnect_max="200ms")
        wait_until(lambda: agent.publisher.attempts >= 3, what="attempts")
        error = agent.publisher.last_error or ""
        assert "certificate" in error, error
    finally:
        broker.stop()


def _passwd(tmp_path: Path, users: dict[str, str]) -> Path:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.fail("mosquitto_passwd missing; install it with: apt-get install -y mosquitto")
    path = tmp_path / "passwd"
    for i, (user, password) in enumerate(users.items()):
        subprocess.run([tool, *(["-c"] if i == 0 else []), "-b", str(path), user, password],
                       check=True, capture_output=True)
    os.chmod(path, 0o600)
    return path


def _secret(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "mqtt-password"
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return path


def _acl_broker(tmp_path: Path) -> LocalBroker:
    acl = tmp_path / "acl"
    acl.write_text("user test-gw\ntopic write city/test-gw/#\ntopic read city/test-gw/echo\n\n"
                   "user platform\ntopic read city/#\n")
    broker = LocalBroker(tmp_path / "auth-broker", anonymous=False, listener_options=[
        f"password_file {_passwd(tmp_path, {'test-gw': 's3cret-gw', 'platform': 'p'})}",
        f"acl_file {acl}"])
    broker.start()
    return broker


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_password_file_and_acl_to_own_prefix(tmp_path: Path, run_agent: Any,
                                             protocol: str) -> None:
    broker = _acl_broker(tmp_path)
    collector = Collector(broker.port, username="platform", password="p")
    try:
        with structlog.testing.capture_logs() as logs:
            run_agent(broker.port, protocol=protocol, username="test-gw",
                      password_file=str(_secret(tmp_path, "s3cret-gw")), health_interval="1s")
            wait_until(lambda: len(collector.readings()) >= 10 and collector.healths()
                       and collector.statuses(), what="telemetry, health and status")
        assert "s3cret-gw" not in json.dumps(logs, default=str), "the password was logged"
    finally:
        collector.stop()
        broker.stop()


def test_wrong_password_is_named_and_queueing_goes_on(tmp_path: Path, run_agent: Any) -> None:
    broker = _acl_broker(tmp_path)
    try:
        os.environ["EDGE_TEST_PASSWORD"] = "wrong"
        agent = run_agent(broker.port, username="test-gw", password_env="EDGE_TEST_PASSWORD",
                          reconnect_min="100ms", reconnect_max="200ms")
        error = _refused(agent, "refused the connection")
        assert "user name or password" in error or "authorized" in error, error
    finally:
        os.environ.pop("EDGE_TEST_PASSWORD", None)
        broker.stop()


def test_password_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    secret = _secret(tmp_path, "hunter2", mode=0o644)
    cfg = write_config(tmp_path / "agent.yaml", broker_port=1883,
                       devices=[modbus_device("plc", 5020)], username="gw",
                       password_file=str(secret))
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    text = str(err.value)
    assert f"{cfg}:" in text and "readable by other users" in text and "chmod 600" in text
    check = subprocess.run([*EDGE_AGENT, "check", "-c", str(cfg)], capture_output=True,
                           text=True, timeout=30)
    assert check.returncode == 1 and "hunter2" not in check.stdout + check.stderr


def test_clock_jumps_keep_seq_and_order(tmp_path: Path, broker: LocalBroker,
                                        collector: Collector, run_agent: Any) -> None:
    clock = ManualClock(90_000_000, synced=False)  # booted without RTC: 1970-01-02
    use(clock)
    try:
        agent: Agent = run_agent(broker.port)
        wait_until(lambda: len(collector.readings()) >= 10, what="readings while unsynced")
        clock.set(1_795_000_000_000, synced=True)  # NTP steps the clock forward 55 years
        mark = agent.queue.stats().next_seq
        wait_until(lambda: max(collector.seqs()) > mark + 10, what="readings after the step")
        clock.set(1_795_000_000_000 - 3_600_000)  # and a step back by an hour
        mark2 = agent.queue.stats().next_seq
        wait_until(lambda: max(collector.seqs()) > mark2 + 10, what="readings after going back")
        agent.scheduler.stop()
        last = agent.queue.stats().next_seq - 1
        wait_until(lambda: collector.seqs() >= set(range(1, last + 1)), what="every seq")
    finally:
        use(None)
    first: dict[int, dict[str, Any]] = {}
    for r in collector.readings():
        first.setdefault(r["seq"], r)
    order = [s for s in first]
    assert order == sorted(order), "seq order survives clock steps"
    early = [first[s] for s in order if s < mark - 5]
    assert early and all(r.get("clock") in ("unsynced", "corrected") for r in early)
    assert all(r["ts"] < 10**11 for r in early if r.get("clock") == "unsynced")
    late = [first[s] for s in order if s > mark2 + 5]
    assert late and all("clock" not in r for r in late)
    assert late[0]["ts"] < first[mark2 - 2]["ts"], "time went back; seq did not"


def test_senml_encoding_end_to_end(broker: LocalBroker, collector: Collector,
                                   run_agent: Any) -> None:
    run_agent(broker.port, encoding="senml", qos=0)
    wait_until(lambda: sum(len(p) for p in collector.senml()) >= 10, what="SenML packs")
    pack = collector.senml()[0]
    assert pack[0]["bn"] == "test-gw:plc:" and {r["n"] for r in pack} == {"turbidity", "chlorine"}
    assert not collector.invalid


def test_client_id_refused_is_named(tmp_path: Path, run_agent: Any) -> None:
    broker = LocalBroker(tmp_path / "strict-broker", listener_options=["clientid_prefixes cityos-"])
    broker.start()
    try:
        agent = run_agent(broker.port, reconnect_min="100ms", reconnect_max="200ms")
        error = _refused(agent, "refused the connection")
        assert "identifier" in error.lower() or "authorized" in error.lower(), error
    finally:
        broker.stop()


def test_a_broker_that_closes_every_accepted_connection_is_retried_less_and_less_often() -> None:
    """CONNACK accepted, then the socket closed at once (a broker or a proxy that kicks the
    client): the backoff must grow as for a refused connection, not restart at every accept."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[float] = []

    def kick() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                with conn:
                    conn.recv(1024)  # CONNECT
                    conn.sendall(b"\x20\x02\x00\x00")  # CONNACK (3.1.1): accepted
                    accepted.append(time.monotonic())

    threading.Thread(target=kick, daemon=True).start()
    cfg = MqttConfig(host="127.0.0.1", port=server.getsockname()[1], protocol="3.1.1",
                     reconnect_min=0.1, reconnect_max=3.2)
    publisher = Publisher(cfg, "gw", [])
    publisher.start()
    try:
        wait_until(lambda: len(accepted) >= 6, timeout=30, what="six accepted connections")
    finally:
        publisher.stop(timeout=0.5)
        server.close()
    gaps = [b - a for a, b in itertools.pairwise(accepted)]
    # 0.1, 0.2, 0.4, 0.8, 1.6 s (+-25 %): the fifth gap is far longer than the first
    assert gaps[4] > 4 * gaps[0], gaps


def test_a_clean_stop_leaves_a_retained_health_that_says_the_uplink_is_down(
        broker: LocalBroker, collector: Collector, run_agent: Any) -> None:
    agent = run_agent(broker.port, health_interval="200ms")
    wait_until(lambda: len(collector.healths()) >= 2, what="health while running")
    assert collector.healths()[-1]["uplink"]["connected"] is True
    agent.stop()
    wait_until(lambda: collector.statuses() and collector.statuses()[-1]["state"] == "offline",
               what="offline")
    last = collector.healths()[-1]
    assert last["uplink"] == last["uplink"] | {"connected": False, "last_error": "agent stopped"}
    late = Collector(broker.port)  # the platform after a restart: the retained messages
    try:
        wait_until(lambda: late.healths() and late.statuses(), what="retained messages")
        assert late.healths()[-1]["uplink"]["connected"] is False
        assert late.statuses()[-1]["state"] == "offline"
    finally:
        late.stop()


def test_the_password_can_come_from_a_systemd_credential(
        tmp_path: Path, run_agent: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """`password_file: credential:NAME` reads $CREDENTIALS_DIRECTORY/NAME, as systemd passes
    it with LoadCredential=; a credential the unit does not pass is named with the fix."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "mqtt-password").write_text("s3cret-gw\n")
    os.chmod(creds / "mqtt-password", 0o440)  # systemd's own mode: not refused
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    broker = _acl_broker(tmp_path)
    collector = Collector(broker.port, username="platform", password="p")
    try:
        agent = run_agent(broker.port, username="test-gw", password_file="credential:mqtt-password")
        assert agent.config.mqtt.password_file == str(creds / "mqtt-password")
        wait_until(lambda: len(collector.readings()) >= 5, what="telemetry with the credential")
    finally:
        collector.stop()
        broker.stop()
    cfg = write_config(tmp_path / "other.yaml", broker_port=1883, username="gw",
                       password_file="credential:mqtt-pass", devices=[modbus_device("p", 5020)])
    with pytest.raises(ConfigError, match=r"systemd passed no credential 'mqtt-pass': add "
                       r"LoadCredential=mqtt-pass:/etc/edge-agent/secrets/mqtt-pass"):
        load_config(cfg)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")  # a technician's check: not the service
    assert load_config(cfg).mqtt.password_file == "/run/credentials/edge-agent.service/mqtt-pass"
    bad = write_config(tmp_path / "bad.yaml", broker_port=1883, username="gw",
                       password_file="credential:../etc/shadow", devices=[modbus_device("p", 5020)])
    with pytest.raises(ConfigError, match="a credential name is letters, digits"):
        load_config(bad)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_offline_is_retained_even_when_its_own_publish_cannot_get_through(
        broker: LocalBroker, collector: Collector, run_agent: Any, protocol: str) -> None:
    """A stop with a full in-flight window (a slow link): `offline` is not acknowledged in
    time, so the broker is made to publish the Last Will instead."""
    agent = run_agent(broker.port, protocol=protocol, max_inflight=2, linger=0)
    wait_until(lambda: collector.statuses() and collector.statuses()[-1]["state"] == "online",
               what="online")
    broker.pause()  # nothing is acknowledged any more: paho's window of 2 fills
    wait_until(lambda: agent.forwarder.inflight >= 2, what="a full in-flight window")
    agent.forwarder.stop(grace=0.1)
    agent.publisher.stop(timeout=0.3)
    broker.resume()
    wait_until(lambda: collector.statuses()[-1]["state"] == "offline", what="the Last Will")
