"""RTU and ASCII on a shared serial line: a real pymodbus server at the far end of a virtual
null-modem (pty pair), several units on one bus, one of them dead."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from agent.core.errors import DeviceTimeout, DeviceUnreachable
from agent.polling.runner import DeviceRunner
from agent.polling.scheduler import Scheduler
from agent.queue import Queue
from agent.transport.ports import BusConfig, SerialPort, open_port
from drivers.modbus.ascii import ModbusAsciiConfig
from drivers.modbus.driver import ModbusDriver
from drivers.modbus.frame import FrameError
from drivers.modbus.rtu import ModbusRtuConfig
from drivers.registry import create
from tests.peers.serial_modbus import NullModem, SerialSimulator
from tests.support import wait_until

DEAD = 3
POINTS: list[dict[str, Any]] = [
    {"name": "ph", "table": "holding", "address": 1, "type": "uint16", "scale": 0.01,
     "unit": "pH"},
    {"name": "orp", "table": "input", "address": 2, "type": "float32", "byte_order": "CDAB"},
    {"name": "level", "table": "holding", "address": 40, "type": "int32"},
    {"name": "pump", "table": "coil", "address": 3, "type": "bool"},
]


@pytest.fixture(params=["rtu", "ascii"])
def line(request: pytest.FixtureRequest) -> Iterator[tuple[str, SerialSimulator, SerialPort]]:
    wire = NullModem()
    sim = SerialSimulator(wire.b, units=(1, 2, DEAD), size=128, framer=request.param,
                          holes={"holding": [20]})
    sim.silent.add(DEAD)
    sim.start()
    port = open_port(BusConfig(name="rs485-1", port=wire.a, timeout=0.25))
    assert isinstance(port, SerialPort)
    yield request.param, sim, port
    port.close()
    sim.stop()
    wire.close()


def device(framing: str, unit: int, port: SerialPort, points: list[dict[str, Any]] = POINTS,
           **extra: Any) -> ModbusDriver:
    model = ModbusRtuConfig if framing == "rtu" else ModbusAsciiConfig
    config = model(name=f"unit{unit}", driver=f"modbus_{framing}", bus="rs485-1", unit=unit,
                   points=points, **extra)
    driver = create(config, {"rs485-1": port})
    assert isinstance(driver, ModbusDriver)
    return driver


def values(driver: ModbusDriver) -> dict[str, Any]:
    return {r.metric: (r.value, r.quality) for r in driver.poll()}


def test_units_on_one_bus_answer_for_themselves(line: tuple[str, SerialSimulator, SerialPort]
                                                ) -> None:
    framing, sim, port = line
    sim.set_value(1, "holding", 1, "uint16", 712)
    sim.set_value(1, "input", 2, "float32", 231.5, order="CDAB")
    sim.set_value(1, "holding", 40, "int32", -12)
    sim.set_bits(1, "coil", 3, [True])
    sim.set_value(2, "holding", 1, "uint16", 688)
    one, two = device(framing, 1, port), device(framing, 2, port)
    assert values(one) == {"ph": (7.12, "good"), "orp": (231.5, "good"),
                           "level": (-12, "good"), "pump": (True, "good")}
    assert values(two)["ph"] == (6.88, "good")
    assert [r.describe() for r in one.plan] == [  # 1 and 40 are more than max_gap apart
        "coil 3..3 (1)", "holding 1..1 (1)", "holding 40..41 (2)", "input 2..3 (2)"]
    assert one.requests == 4


def test_a_dead_unit_costs_one_timeout_and_nothing_else(
        line: tuple[str, SerialSimulator, SerialPort]) -> None:
    framing, _sim, port = line
    dead, alive = device(framing, DEAD, port), device(framing, 1, port)
    with pytest.raises(DeviceTimeout, match=f"unit {DEAD}: no reply on bus rs485-1"):
        dead.poll()
    assert dead.requests == 1, "the first silent request ends the poll"
    assert all(q == "good" for _, q in values(alive).values()), "the line is usable right after"


def test_busy_reply_is_retried(line: tuple[str, SerialSimulator, SerialPort]) -> None:
    framing, sim, port = line
    sim.set_value(2, "holding", 1, "uint16", 700)
    driver = device(framing, 2, port, points=POINTS[:1])
    sim.set_busy(2, 1)
    assert values(driver) == {"ph": (7.0, "good")}
    assert driver.requests == 2
    sim.set_busy(2, 5)  # still busy after the retries: the points say so, the device is alive
    assert values(driver) == {"ph": (None, "device_busy")}


def test_damaged_reply_is_read_again_then_reported(
        line: tuple[str, SerialSimulator, SerialPort]) -> None:
    framing, sim, port = line
    driver = device(framing, 1, port, points=POINTS[:1])
    sim.corrupt = 1
    assert values(driver)["ph"][1] == "good"
    sim.corrupt = 2
    with pytest.raises(FrameError) as err:
        driver.poll()
    assert err.value.quality == "crc_error" and "unit 1 on bus rs485-1" in str(err.value)
    assert values(driver)["ph"][1] == "good"


def test_refused_read_is_split_and_the_plan_remembered(
        line: tuple[str, SerialSimulator, SerialPort]) -> None:
    framing, sim, port = line
    sim.set_value(1, "holding", 18, "uint16", 18)
    sim.set_value(1, "holding", 22, "uint16", 22)
    points = [{"name": f"r{a}", "table": "holding", "address": a} for a in (16, 18, 22, 24)]
    driver = device(framing, 1, port, points=points)
    assert len(driver.plan) == 1  # 16..24 merged, across the hole at 20
    assert values(driver) == {"r16": (0, "good"), "r18": (18, "good"), "r22": (22, "good"),
                              "r24": (0, "good")}
    assert [r.describe() for r in driver.plan] == ["holding 16..18 (3)", "holding 22..24 (3)"]
    before = driver.requests
    values(driver)
    assert driver.requests - before == 2, "the working plan is kept"


def test_a_point_on_the_hole_is_reported_alone(
        line: tuple[str, SerialSimulator, SerialPort]) -> None:
    framing, _sim, port = line
    points = [{"name": f"r{a}", "table": "holding", "address": a} for a in (19, 20, 21)]
    assert values(device(framing, 1, port, points=points)) == {
        "r19": (0, "good"), "r20": (None, "illegal_address"), "r21": (0, "good")}


def test_missing_port_is_unreachable() -> None:
    port = open_port(BusConfig(name="gone", port="/dev/ttyNOPE9", timeout=0.1))
    driver = device("rtu", 1, port)  # type: ignore[arg-type]
    with pytest.raises(DeviceUnreachable, match="cannot open bus gone"):
        driver.poll()


@pytest.mark.parametrize("line", ["rtu"], indirect=True)  # the worker does not care about framing
def test_bus_worker_keeps_healthy_units_polled_around_a_dead_one(
        line: tuple[str, SerialSimulator, SerialPort], tmp_path: Path) -> None:
    framing, sim, port = line
    sim.set_value(1, "holding", 1, "uint16", 700)
    sim.set_value(2, "holding", 1, "uint16", 701)
    queue = Queue(tmp_path / "q.db")
    runners = [DeviceRunner(device(framing, u, port, interval=0.03, points=POINTS[:1],
                                   **({"timeout": 0.1} if u == DEAD else {})), queue,
                            backoff_max=1.0) for u in (1, 2, DEAD)]
    scheduler = Scheduler(runners, {"rs485-1": port})
    assert scheduler.buses == ["rs485-1"]
    scheduler.start()
    try:
        wait_until(lambda: min(r.polls for r in runners[:2]) >= 10, what="healthy polls")
    finally:
        scheduler.stop()
    healthy, dead = runners[:2], runners[2]
    assert all(r.online for r in healthy) and not dead.online
    assert dead.polls < min(r.polls for r in healthy) / 2, "the dead unit backs off"
    readings = [q.reading for q in queue.peek(0, 10_000)]
    by_device = {(r.device, r.quality) for r in readings}
    assert by_device == {("unit1", "good"), ("unit2", "good"), (f"unit{DEAD}", "timeout")}
    assert {r.value for r in readings if r.device == "unit2"} == {7.01}
    queue.close()


def test_a_port_that_refuses_its_line_settings_is_unreachable_and_logged_once(
        tmp_path: Path) -> None:
    """A pty (like some USB adapters) refuses 7E1: termios.error, which is not an OSError."""
    master, slave = os.openpty()
    try:
        port = open_port(BusConfig(name="seven", port=os.ttyname(slave), bytesize=7, parity="E",
                                   timeout=0.1))
        queue = Queue(tmp_path / "q.db")
        runner = DeviceRunner(device("ascii", 1, port, points=POINTS[:1]),  # type: ignore[arg-type]
                              queue, backoff_max=0.0)
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                runner.poll_once()
        runner.close()
        readings = [q.reading for q in queue.peek(0, 100)]
        queue.close()
    finally:
        os.close(master)
        os.close(slave)
    assert readings and {r.quality for r in readings} == {"unreachable"}
    events = [e["event"] for e in logs]
    assert "driver crashed" not in events
    assert events.count("device offline") == 1, logs
    [offline] = [e for e in logs if e["event"] == "device offline"]
    assert "refuses its line settings (9600 baud, 7E1)" in offline["error"], offline
