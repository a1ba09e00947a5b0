"""Tests for agent.sim.modbus with a real pymodbus client: tables, errors, restarts, WaterPlant."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from pymodbus.client import ModbusTcpClient

from agent.sim.modbus import ModbusSimulator, WaterPlant
from drivers.modbus.codec import decode, register_count
from drivers.modbus.tcp import ModbusPoint

SIZE = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sim() -> Iterator[ModbusSimulator]:
    simulator = ModbusSimulator(free_port(), units=(1, 2), size=SIZE)
    simulator.start()
    yield simulator
    simulator.stop()


@pytest.fixture
def client(sim: ModbusSimulator) -> Iterator[ModbusTcpClient]:
    c = ModbusTcpClient("127.0.0.1", port=sim.port, timeout=2, retries=0)
    assert c.connect()
    yield c
    c.close()


def read(client: ModbusTcpClient, table: str, address: int, count: int, unit: int = 1) -> list[int]:
    fn = client.read_holding_registers if table == "holding" else client.read_input_registers
    rr = fn(address, count=count, device_id=unit)
    assert not rr.isError(), rr
    return list(rr.registers)


CASES = [
    ("float32", 123.456, "ABCD"), ("float32", -0.5, "CDAB"), ("float64", 1e-300, "BADC"),
    ("int16", -200, "DCBA"), ("uint16", 65535, "ABCD"), ("int32", -2, "CDAB"),
    ("uint32", 4_000_000_000, "BADC"), ("int64", -(1 << 62), "DCBA"),
    ("uint64", (1 << 64) - 1, "little"), ("string", "PLC-7", "BADC"),
]


@pytest.mark.parametrize("table", ["holding", "input"])
@pytest.mark.parametrize(("type_", "value", "order"), CASES)
def test_set_value_reads_back(
    sim: ModbusSimulator, client: ModbusTcpClient, table: str, type_: str,
    value: int | float | str, order: str,
) -> None:
    length = 4 if type_ == "string" else None
    n = register_count(type_, length)
    sim.set_value(1, table, 10, type_, value, order, length)
    got = decode(read(client, table, 10, n), type_, order, length)
    if type_ == "float32":
        assert got == pytest.approx(value, rel=1e-7)
    else:
        assert got == value


def test_tables_and_units_are_separate(sim: ModbusSimulator, client: ModbusTcpClient) -> None:
    sim.set_registers(1, "holding", 0, [1, 2, 3])
    sim.set_registers(1, "input", 0, [4, 5, 6])
    sim.set_registers(2, "holding", 0, [7, 8, 9])
    assert read(client, "holding", 0, 3) == [1, 2, 3]
    assert read(client, "input", 0, 3) == [4, 5, 6]
    assert read(client, "holding", 0, 3, unit=2) == [7, 8, 9]
    assert read(client, "input", 0, 3, unit=2) == [0, 0, 0]


def test_bits(sim: ModbusSimulator, client: ModbusTcpClient) -> None:
    sim.set_bits(1, "coil", 3, [True, False, True])
    sim.set_value(1, "discrete", 17, "bool", True)
    sim.set_bits(1, "coil", SIZE - 1, [True])
    bits = client.read_coils(0, count=8, device_id=1).bits
    assert bits == [False, False, False, True, False, True, False, False]
    assert client.read_discrete_inputs(17, count=1, device_id=1).bits[0] is True
    assert client.read_coils(17, count=1, device_id=1).bits[0] is False
    assert client.read_coils(SIZE - 1, count=1, device_id=1).bits[0] is True
    sim.set_bits(1, "coil", 4, [True])
    sim.set_bits(1, "coil", 3, [False])
    assert client.read_coils(3, count=2, device_id=1).bits[:2] == [False, True]


@pytest.mark.parametrize(
    ("fc", "address", "count"),
    [("holding", SIZE, 1), ("holding", SIZE - 1, 2), ("input", SIZE, 1), ("input", 1000, 1),
     ("coil", SIZE, 1), ("discrete", SIZE + 5, 1), ("coil", 5000, 8)],
)
def test_past_the_end_is_exception_2(
    client: ModbusTcpClient, fc: str, address: int, count: int
) -> None:
    fn = {"holding": client.read_holding_registers, "input": client.read_input_registers,
          "coil": client.read_coils, "discrete": client.read_discrete_inputs}[fc]
    rr = fn(address, count=count, device_id=1)
    assert rr.isError()
    assert rr.exception_code == 2


def test_unknown_unit_is_exception_4(client: ModbusTcpClient) -> None:
    rr = client.read_holding_registers(0, count=1, device_id=9)
    assert rr.isError()
    assert rr.exception_code == 4


def test_client_writes_and_requests_counter(sim: ModbusSimulator, client: ModbusTcpClient) -> None:
    before = sim.requests
    assert not client.write_registers(20, [11, 12], device_id=1).isError()
    assert not client.write_coil(9, True, device_id=1).isError()
    assert read(client, "holding", 20, 2) == [11, 12]
    assert client.read_coils(9, count=1, device_id=1).bits[0] is True
    assert sim.requests == before + 4


def test_bad_arguments(sim: ModbusSimulator) -> None:
    calls: list[Callable[[], None]] = [
        lambda: sim.set_registers(1, "coil", 0, [1]),
        lambda: sim.set_registers(1, "holding", 0, [65536]),
        lambda: sim.set_registers(1, "holding", SIZE - 1, [1, 2]),
        lambda: sim.set_registers(3, "holding", 0, [1]),
        lambda: sim.set_bits(1, "input", 0, [True]),
        lambda: sim.set_value(1, "holding", 0, "int16", 40000),
    ]
    for call in calls:
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError):
        ModbusSimulator(1, units=(0,))


def test_multi_register_updates_are_atomic(sim: ModbusSimulator, client: ModbusTcpClient) -> None:
    done = threading.Event()

    def writer() -> None:
        i = 0
        while not done.is_set():
            i = (i + 1) % 65536
            sim.set_registers(1, "holding", 0, [i, 65535 - i, i])
            time.sleep(0)  # yield the GIL (not a synchronisation sleep)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        seen = set()
        for _ in range(300):
            a, b, c = read(client, "holding", 0, 3)
            assert (a + b, a) == (65535, c)
            seen.add(a)
        assert len(seen) > 10  # the writer really was writing meanwhile
    finally:
        done.set()
        thread.join()


def test_stop_frees_the_port_and_restart_keeps_set_values(
    sim: ModbusSimulator, client: ModbusTcpClient
) -> None:
    sim.set_value(1, "holding", 0, "uint32", 123456)
    assert read(client, "holding", 0, 2) == [1, 57920]
    sim.stop()
    sim.stop()  # idempotent
    again = ModbusSimulator(sim.port)
    again.start()  # same port, while the old client socket is still open
    try:
        c2 = ModbusTcpClient("127.0.0.1", port=sim.port, timeout=2, retries=0)
        assert c2.connect()
        assert c2.read_holding_registers(0, count=2, device_id=1).registers == [0, 0]
        c2.close()
    finally:
        again.stop()
    sim.start()  # the same object again: values set with set_* survive
    c3 = ModbusTcpClient("127.0.0.1", port=sim.port, timeout=2, retries=0)
    assert c3.connect()
    assert c3.read_holding_registers(0, count=2, device_id=1).registers == [1, 57920]
    c3.close()


def test_start_on_a_busy_port_says_why(sim: ModbusSimulator) -> None:
    with pytest.raises(RuntimeError, match="in use"):
        ModbusSimulator(sim.port).start()


def test_pymodbus_server_logging_is_silenced(
    client: ModbusTcpClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="pymodbus"):
        client.read_holding_registers(0, count=1, device_id=9)  # the server logs an ERROR
        client.close()
    assert [r for r in caplog.records if (r.threadName or "").startswith("modbus-sim")] == []


def test_water_plant_registers_match_tick(sim: ModbusSimulator, client: ModbusTcpClient) -> None:
    plant = WaterPlant(sim, unit=2, seed=7, speed=30.0)
    for step in range(20):
        values = plant.tick(1_000.0 + step)
        for point in WaterPlant.POINTS:
            p = ModbusPoint.model_validate(point)  # the map is a valid device config
            if p.type == "bool":
                fn = client.read_coils if p.table == "coil" else client.read_discrete_inputs
                assert fn(p.address, count=1, device_id=2).bits[0] is values[p.name]
                continue
            raw = decode(read(client, p.table, p.address, register_count(p.type), 2), p.type)
            assert isinstance(raw, int | float)
            assert raw * p.scale == pytest.approx(values[p.name], abs=p.scale / 2 + 1e-9)


def test_water_plant_is_deterministic_and_plausible() -> None:
    sim = ModbusSimulator(1, size=16)  # never started: set_* only records the values
    a, b = WaterPlant(sim, seed=1), WaterPlant(sim, seed=1)
    runs = [[p.tick(float(t)) for t in range(0, 86_400, 10)] for p in (a, b)]
    assert runs[0] == runs[1]
    day = runs[0]
    assert all(6.9 <= v["ph"] <= 7.5 and 0.1 <= v["turbidity"] <= 1.0 for v in day)
    assert all(0.5 <= v["chlorine"] <= 1.5 and 0 <= v["tank_level"] <= 100 for v in day)
    assert all((v["flow"] > 0) == v["pump_running"] for v in day)
    assert len({v["pump_running"] for v in day}) == 2  # the pump cycles
    assert min(v["tank_level"] for v in day) >= 25 and max(v["tank_level"] for v in day) <= 85
    totals = [v["total_volume"] for v in day]
    assert totals == sorted(totals) and totals[-1] > totals[0]
    assert WaterPlant(sim, seed=2).tick(0.0) != day[0]


def test_water_plant_runs_in_background(sim: ModbusSimulator, client: ModbusTcpClient) -> None:
    plant = WaterPlant(sim, unit=1, seed=3)
    plant.run(period=0.01)
    try:
        deadline = time.monotonic() + 5
        while read(client, "holding", 0, 2) == [0, 0]:  # ph is never 0.0 once written
            assert time.monotonic() < deadline, "WaterPlant.run never wrote"
    finally:
        plant.stop()
        plant.stop()
    assert 6.9 <= float(decode(read(client, "holding", 0, 2), "float32")) <= 7.5
