"""The agent under systemd's protocols, with the test as the service manager.

`edge-agent run` runs as a real process with `NOTIFY_SOCKET` pointing at an AF_UNIX datagram
socket this test owns (and `WATCHDOG_USEC` as systemd sets it for `WatchdogSec=`), against real
pymodbus servers and a real Mosquitto. What is observed is what systemd would receive: READY,
STATUS, WATCHDOG pings, RELOADING and STOPPING, in order. A dead device (a server that accepts
the connection and never answers) with a short timeout is offline yet progressing: the pings go
on. With a timeout far longer than the watchdog period the same device holds a poll in real
socket I/O past the period, which is what a hung poll looks like from outside: the pings stop
while the other device keeps polling, and resume once the poll ends. (The agent's own I/O honours
its timeouts, so an honest hang needs a long timeout; the agent warns of such a config.) What
systemd does then - kill and restart - needs systemd as PID 1 and is not run here.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.core.model import Reading, now_ms
from agent.queue import Queue
from agent.service.systemd import Notifier, watchdog_period
from agent.sim.broker import LocalBroker, free_port
from agent.sim.modbus import ModbusSimulator
from tests.support import EDGE_AGENT, ROOT, Collector, modbus_device, wait_until, write_config

Message = dict[str, str]


class NotifySocket:
    """The service manager's end of NOTIFY_SOCKET: keeps every datagram, parsed, in order."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages: list[Message] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            if not data:  # shut down by close()
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            with self._lock:
                self.messages.append(fields)

    def snapshot(self) -> list[Message]:
        with self._lock:
            return list(self.messages)

    def wait_for(self, match: Callable[[Message], bool], after: int = 0, what: str = "",
                 timeout: float = 20.0) -> int:
        """Index of the first message from `after` on that matches."""
        def found() -> int | None:
            return next((i for i, m in enumerate(self.snapshot()) if i >= after and match(m)),
                        None)
        wait_until(lambda: found() is not None, timeout=timeout, what=what or "a message")
        index = found()
        assert index is not None
        return index

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the receiving thread
        self._thread.join()
        self.sock.close()


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    with tempfile.TemporaryDirectory(prefix="ea-notify-") as d:  # short: sun_path is 108 bytes
        n = NotifySocket(os.path.join(d, "notify"))
        yield n
        n.close()


def _start(cfg: Path, notify: NotifySocket, watchdog_s: float, log: Path
           ) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "WATCHDOG_PID"}
    env |= {"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": str(int(watchdog_s * 1e6))}
    with log.open("wb") as err:
        return subprocess.Popen([*EDGE_AGENT, "run", "-c", str(cfg)], env=env, stderr=err)


def _stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=timeout)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture
def mute() -> Iterator[ModbusSimulator]:
    """A Modbus server that accepts connections and never answers unit 1 (a dead unit)."""
    sim = ModbusSimulator(port=free_port())
    sim.silent.add(1)
    sim.start()
    yield sim
    sim.stop()


def test_notifier_sends_datagrams_to_a_path_and_to_an_abstract_socket(tmp_path: Path) -> None:
    for address in (str(tmp_path / "n"), f"@edge-agent-test-{os.getpid()}"):
        listener = NotifySocket(address)
        try:
            sender = Notifier.from_env({"NOTIFY_SOCKET": address})
            assert sender.send("READY=1", "STATUS=ok")
            wait_until(lambda lst=listener: lst.snapshot(), what="the datagram")
            assert listener.snapshot() == [{"READY": "1", "STATUS": "ok"}]
            sender.close()
        finally:
            listener.close()
    assert not Notifier.from_env({}).send("READY=1")  # not under systemd: nothing to do
    gone = Notifier(str(tmp_path / "nobody-listens"))
    assert not gone.send("WATCHDOG=1") and gone.failed == 1  # dropped, never raised


def test_watchdog_period_is_for_this_process_only() -> None:
    assert watchdog_period({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_period({}) is None and watchdog_period({"WATCHDOG_USEC": "x"}) is None


def _kinds(messages: list[Message]) -> list[str]:
    """The notices in order, one per datagram (STATUS only where it came alone)."""
    out = []
    for m in messages:
        notice = [k for k in ("READY", "RELOADING", "STOPPING", "WATCHDOG") if k in m]
        out += notice or ["STATUS"]
    return out


def test_ready_status_watchdog_reloading_stopping_in_order(
        tmp_path: Path, plc: ModbusSimulator, mute: ModbusSimulator, broker: LocalBroker,
        collector: Collector, notify: NotifySocket) -> None:
    dead = modbus_device("dead", mute.port, interval="100ms") | {"timeout": "300ms"}
    cfg = write_config(tmp_path / "agent.yaml", broker_port=broker.port,
                       devices=[modbus_device("plc", plc.port, interval="100ms"), dead])
    proc = _start(cfg, notify, watchdog_s=2.0, log=tmp_path / "agent.log")
    try:
        ready = notify.wait_for(lambda m: "READY" in m, what="READY=1")
        assert re.fullmatch(r"\d/2 devices online, \d+ queued, uplink (connected|down)",
                            notify.snapshot()[ready]["STATUS"])
        # STATUS follows the devices and the uplink; the dead device is offline, not stuck:
        # its polls time out (300 ms) and back off, so the pings go on.
        status = notify.wait_for(lambda m: m.get("STATUS", "").startswith("1/2 devices online")
                                 and m["STATUS"].endswith("uplink connected"),
                                 what="STATUS with one device online and the uplink up")
        notify.wait_for(lambda m: "WATCHDOG" in m, after=status, what="a ping")
        pinged = notify.wait_for(lambda m: "WATCHDOG" in m, after=status + 1)
        notify.wait_for(lambda m: "WATCHDOG" in m, after=pinged + 1, what="pings going on")

        (tmp_path / "devices.d").mkdir()  # a reload that adds a device
        (tmp_path / "devices.d" / "plc2.yaml").write_text(
            f"name: plc2\ndriver: modbus_tcp\nhost: 127.0.0.1\nport: {plc.port}\nunit: 2\n"
            "interval: 100ms\npoints: [{name: level, address: 5}]\n")
        mark = len(notify.snapshot())
        proc.send_signal(signal.SIGHUP)
        reloading = notify.wait_for(lambda m: "RELOADING" in m, after=mark, what="RELOADING=1")
        assert int(notify.snapshot()[reloading]["MONOTONIC_USEC"]) > 0
        again = notify.wait_for(lambda m: "READY" in m, after=reloading, what="READY after reload")
        assert "/3 devices online" in notify.snapshot()[again]["STATUS"]
        notify.wait_for(lambda m: "WATCHDOG" in m, after=again, what="pings after the reload")
        assert _stop(proc) == 0
    finally:
        _kill(proc)
    kinds = _kinds(notify.snapshot())
    assert kinds[0] == "READY" and kinds[-1] == "STOPPING" and kinds.count("STOPPING") == 1
    first_ping, reload_at = kinds.index("WATCHDOG"), kinds.index("RELOADING")
    assert first_ping < reload_at and "READY" in kinds[reload_at + 1:]
    assert "WATCHDOG" in kinds[reload_at:]
    log = (tmp_path / "agent.log").read_text()
    assert '"event": "device offline"' in log and '"device": "dead"' in log
    assert "watchdog withheld" not in log and "Traceback" not in log


def _queued(db: Path, device: str) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return int(con.execute("SELECT count(*) FROM readings WHERE device = ?",
                               (device,)).fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        con.close()


def test_a_hung_poll_stops_the_watchdog_pings(tmp_path: Path, plc: ModbusSimulator,
                                              mute: ModbusSimulator,
                                              notify: NotifySocket) -> None:
    hung = modbus_device("hung", mute.port, interval="100ms") | {"timeout": "1h"}
    cfg = write_config(tmp_path / "agent.yaml", broker_port=free_port(),  # uplink down
                       devices=[modbus_device("plc", plc.port, interval="50ms"), hung])
    db, log = tmp_path / "queue.db", tmp_path / "agent.log"
    proc = _start(cfg, notify, watchdog_s=1.0, log=log)
    try:
        notify.wait_for(lambda m: "READY" in m, what="READY=1")
        stalled = notify.wait_for(
            lambda m: m.get("STATUS", "").startswith("STALLED: poll of hung running for"),
            what="STATUS saying the poll of `hung` is stuck")
        # The agent is otherwise busy: `plc` goes on polling for 20 more beats (1 s, four ping
        # periods), and all that time not one ping goes out.
        polled = _queued(db, "plc")
        wait_until(lambda: _queued(db, "plc") >= polled + 40, what="plc polled 20 more times")
        assert not [m for m in notify.snapshot()[stalled:] if "WATCHDOG" in m]
        # The poll ends (the server goes away: the connection closes, reconnects are
        # refused at once): progress again, and the pings resume.
        mute.stop()
        resumed = notify.wait_for(lambda m: "WATCHDOG" in m, after=stalled, what="pings again")
        notify.wait_for(lambda m: "devices online" in m.get("STATUS", ""), after=resumed,
                        what="STATUS no longer STALLED")
        assert _stop(proc) == 0
    finally:
        _kill(proc)
    text = log.read_text()
    assert "device timeout too long for the watchdog" in text  # said at start
    assert "watchdog withheld: not making progress" in text and "watchdog resumed" in text


def test_sigterm_during_a_large_backlog_exits_in_time_and_loses_nothing(
        tmp_path: Path, plc: ModbusSimulator, broker: LocalBroker, collector: Collector,
        notify: NotifySocket) -> None:
    db = tmp_path / "queue.db"
    backlog, ts = Queue(db, synchronous="normal"), now_ms() - 86_400_000
    for start in range(0, 200_000, 10_000):  # a long outage: 200,000 readings waiting
        backlog.put([Reading("plc", "turbidity", i * 0.01, "NTU", ts + i)
                     for i in range(start, start + 10_000)])
    backlog.close()
    cfg = write_config(tmp_path / "agent.yaml", broker_port=broker.port,
                       devices=[modbus_device("plc", plc.port, interval="20ms")])
    proc = _start(cfg, notify, watchdog_s=5.0, log=tmp_path / "agent.log")
    try:
        notify.wait_for(lambda m: "READY" in m, what="READY=1")
        wait_until(lambda: len(collector.telemetry()) >= 5, what="the backlog draining")
        code = _stop(proc, timeout=_unit_seconds("TimeoutStopSec"))  # as systemd would wait
    finally:
        _kill(proc)
    assert code == 0
    assert _kinds(notify.snapshot())[-1] == "STOPPING"
    wait_until(lambda: collector.statuses() and collector.statuses()[-1]["state"] == "offline",
               what="the retained offline status")
    q = Queue(db)
    try:
        last = q.stats().next_seq - 1
        queued = {r.seq for r in q.peek(0, 10**6)}
    finally:
        q.close()
    assert last > 200_000  # live polls were queued too, up to the stop
    assert len(queued) > 1_000  # stopped in the middle of the backlog, not after draining it
    wait_until(lambda: collector.seqs() | queued >= set(range(1, last + 1)), timeout=10,
               what="every reading delivered or still queued")
    assert "Traceback" not in (tmp_path / "agent.log").read_text()


def _unit_seconds(key: str) -> float:
    """A `30s`-style duration from the shipped unit."""
    text = (ROOT / "systemd" / "edge-agent.service").read_text()
    match = re.search(rf"^{key}=(\d+)s$", text, re.M)
    assert match, f"{key}= in seconds in the unit"
    return float(match.group(1))

