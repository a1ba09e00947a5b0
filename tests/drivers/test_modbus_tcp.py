"""modbus_tcp against a real pymodbus server: golden register maps, connection reuse, a server
that is killed and restarted, gateway replies, and the core's reporting rules on top."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from agent.core.errors import DeviceUnreachable
from agent.polling.reporting import ReportFilter
from agent.sim.broker import free_port
from agent.sim.modbus import ModbusSimulator
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.frame import FrameError, ModbusExceptionReply
from drivers.modbus.tcp import ModbusTcpConfig
from drivers.registry import create

GOLDEN = sorted((Path(__file__).parent / "golden").glob("*.yaml"))


@pytest.fixture
def sim() -> Iterator[ModbusSimulator]:
    s = ModbusSimulator(free_port(), units=(1,), size=64)
    s.start()
    yield s
    s.stop()


def tcp(port: int, points: list[dict[str, Any]], **extra: Any) -> ModbusDriver:
    extra.setdefault("timeout", 0.5)
    config = ModbusTcpConfig(name="plc", driver="modbus_tcp", host="127.0.0.1", port=port,
                             points=points, **extra)
    driver = create(config)
    assert isinstance(driver, ModbusDriver)
    return driver


@pytest.mark.parametrize("case", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_register_map(case: Path, sim: ModbusSimulator) -> None:
    spec = YAML(typ="safe").load(case.read_text())
    for block in spec["registers"]:
        if block["table"] in ("coil", "discrete"):
            sim.set_bits(1, block["table"], block["address"], block["values"])
        else:
            sim.set_registers(1, block["table"], block["address"], block["values"])
    device = spec["device"]
    driver = tcp(sim.port, **device)
    readings = ReportFilter(driver.config.points).apply(driver.poll())
    got = {r.metric: r.value if r.quality == "good" else [r.value, r.quality] for r in readings}
    assert got == spec["expect"]
    assert len(driver.plan) == 3  # coil, holding 0..15, input 0..13


def test_connection_is_reused_and_reopened_after_a_restart(sim: ModbusSimulator) -> None:
    sim.set_value(1, "holding", 0, "uint16", 5)
    driver = tcp(sim.port, [{"name": "a", "address": 0}])
    assert driver.poll()[0].value == 5
    sock = driver.port._sock  # type: ignore[attr-defined]
    assert driver.poll()[0].value == 5
    assert driver.port._sock is sock, "one connection for every poll"  # type: ignore[attr-defined]
    sim.stop()
    with pytest.raises(DeviceUnreachable, match=f"127.0.0.1:{sim.port}"):
        driver.poll()
    with pytest.raises(DeviceUnreachable, match="cannot connect"):
        driver.poll()  # still down: refused, not a traceback
    sim.set_value(1, "holding", 0, "uint16", 6)
    sim.start()
    assert driver.poll()[0].value == 6


def test_silent_tcp_unit_times_out_and_recovers(sim: ModbusSimulator) -> None:
    driver = tcp(sim.port, [{"name": "a", "address": 0}], timeout=0.2)
    sim.silent.add(1)
    with pytest.raises(Exception, match="unit 1: no reply") as err:
        driver.poll()
    assert getattr(err.value, "quality", None) == "timeout"
    sim.silent.clear()
    assert driver.poll()[0].quality == "good"


def test_one_planned_read_retries_like_a_poll_and_read_once_does_not(
        sim: ModbusSimulator) -> None:
    """`read` is the transaction a poll runs for each planned request ("busy" retried);
    `read_once` is one exchange, and each shows up in the trace as `probe` prints it."""
    sim.set_registers(1, "holding", 10, [7, 8, 9])
    driver = tcp(sim.port, [{"name": "a", "address": 10}, {"name": "b", "address": 12}])
    (request,) = driver.plan
    driver.trace = []
    sim.set_busy(1, 1)
    assert driver.read(request) == [7, 8, 9]
    assert [t.error for t in driver.trace] == ["device_busy", None]
    assert driver.points_in(request, [7, 8, 9]) == [(0, [7]), (1, [9])]
    sim.set_busy(1, 1)
    with pytest.raises(ModbusExceptionReply, match="device busy"):
        driver.read_once(request)
    assert driver.read_once(request) == [7, 8, 9]


def test_reporting_rules() -> None:
    config = ModbusTcpConfig(name="d", driver="modbus_tcp", host="h", points=[
        {"name": "level", "address": 0, "deadband": 0.5, "max_silence": 10},
        {"name": "state", "address": 1, "values": {0: "off", 1: "on"}, "on_change": True},
        {"name": "raw", "address": 2}])
    from agent.core.model import Reading

    def poll(ts: int, level: float, state: int, quality: str = "good") -> list[str]:
        f = [Reading("d", "level", level if quality == "good" else None, None, ts, quality),
             Reading("d", "state", state, None, ts), Reading("d", "raw", 1, None, ts)]
        return [f"{r.metric}={r.value}" for r in rf.apply(f)]

    rf = ReportFilter(config.points)
    assert poll(0, 1.0, 0) == ["level=1.0", "state=off", "raw=1"]
    assert poll(1000, 1.3, 0) == ["raw=1"]            # within the deadband, state unchanged
    assert poll(2000, 1.6, 1) == ["level=1.6", "state=on", "raw=1"]  # moved 0.6 since 1.0
    assert poll(3000, 1.4, 1) == ["raw=1"]
    assert poll(4000, 0, 1, "timeout") == ["level=None", "raw=1"]   # quality changed
    assert poll(5000, 1.4, 1) == ["level=1.4", "raw=1"]             # back to good
    assert poll(15000, 1.4, 1) == ["level=1.4", "raw=1"]            # max_silence 10 s
    assert rf.suppressed == 7  # state unchanged since 2 s: its max_silence is the default


class RawServer:
    """A hand-written Modbus TCP server on a raw socket that answers every read request for
    unit `answer_as` (the wrong one, as a TCP gateway mixing up its serial units does) with
    registers counting 1, 2, 3..."""

    def __init__(self, answer_as: int) -> None:
        self.answer_as, self.requests = answer_as, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                with conn:
                    while head := conn.recv(7, socket.MSG_WAITALL):
                        tid, _proto, length, _unit = struct.unpack(">HHHB", head)
                        fc, _addr, count = struct.unpack(">BHH", conn.recv(length - 1,
                                                                           socket.MSG_WAITALL))
                        self.requests += 1
                        data = b"".join(struct.pack(">H", i + 1) for i in range(count))
                        pdu = bytes([fc, len(data)]) + data
                        conn.sendall(struct.pack(">HHHB", tid, 0, len(pdu) + 1, self.answer_as)
                                     + pdu)

    def close(self) -> None:
        self.sock.close()


def test_a_reply_from_another_unit_is_never_a_value() -> None:
    server = RawServer(answer_as=2)
    try:
        driver = tcp(server.port, [{"name": "a", "address": 0}, {"name": "b", "address": 1}],
                     unit=1)
        with pytest.raises(FrameError, match="reply from unit 2 while waiting for unit 1"):
            driver.poll()  # the runner turns it into readings of quality crc_error
        driver.close()
    finally:
        server.close()
    assert server.requests == 2, "read once more (a damaged reply), then refused"
    right = RawServer(answer_as=1)
    try:
        driver = tcp(right.port, [{"name": "a", "address": 0}], unit=1)
        assert [(r.value, r.quality) for r in driver.poll()] == [(1, "good")]
        driver.close()
    finally:
        right.close()
