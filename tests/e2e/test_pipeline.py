"""End to end in one process: real pymodbus server -> agent -> real Mosquitto -> subscriber."""

from __future__ import annotations

import pytest

from agent.service.runtime import Agent
from agent.sim.broker import LocalBroker, free_port
from agent.sim.modbus import ModbusSimulator
from tests.support import Collector, RunAgent, modbus_device, wait_until


def test_configured_points_arrive_decoded(plc: ModbusSimulator, broker: LocalBroker,
                                          collector: Collector, run_agent: RunAgent) -> None:
    plc.set_value(1, "holding", 100, "float32", 0.42)
    plc.set_value(1, "holding", 102, "uint16", 123)
    plc.set_value(1, "input", 10, "int32", -70000, order="CDAB")
    plc.set_bits(1, "coil", 3, [True])
    points = [
        {"name": "turbidity", "table": "holding", "address": 100, "type": "float32",
         "unit": "NTU"},
        {"name": "chlorine", "table": "holding", "address": 102, "type": "uint16",
         "scale": 0.01, "unit": "mg/L"},
        {"name": "flow_total", "table": "input", "address": 10, "type": "int32",
         "byte_order": "CDAB", "unit": "m3"},
        {"name": "pump_running", "table": "coil", "address": 3, "type": "bool"},
    ]
    run_agent(broker.port, [modbus_device("intake-plc", plc.port, points=points)])
    wait_until(lambda: len(collector.readings()) >= 8, what="two polls delivered")
    latest = {r["metric"]: r for r in collector.readings()}
    assert latest["turbidity"]["value"] == pytest.approx(0.42, rel=1e-6)
    assert latest["turbidity"]["unit"] == "NTU"
    assert latest["chlorine"]["value"] == 1.23
    assert latest["flow_total"]["value"] == -70000
    assert latest["pump_running"]["value"] is True
    assert {r["quality"] for r in collector.readings()} == {"good"}
    assert {r["device"] for r in collector.readings()} == {"intake-plc"}
    online = collector.statuses()[0]
    assert online["state"] == "online" and online["devices"] == ["intake-plc"]
    topics = {t for t, _, _ in collector.messages}
    assert "city/test-gw/intake-plc/telemetry" in topics and "city/test-gw/status" in topics


def _assert_complete_and_ordered(collector: Collector, last_seq: int) -> None:
    readings = collector.readings()
    assert collector.seqs() == set(range(1, last_seq + 1)), "a queued reading never arrived"
    by_seq: dict[int, dict] = {}  # type: ignore[type-arg]
    for r in readings:  # a duplicate is allowed only as the same reading with the same seq
        assert by_seq.setdefault(r["seq"], r) == r
    first_seen: dict[tuple[str, bool], list[int]] = {}  # per device and stream: live first,
    seen: set[int] = set()  # the backlog (historical) beside it, each in seq order
    for r in readings:
        if r["seq"] not in seen:
            seen.add(r["seq"])
            first_seen.setdefault((r["device"], r["historical"]), []).append(r["seq"])
    for (device, historical), seqs in first_seen.items():
        assert seqs == sorted(seqs), f"{device} (historical={historical}): out of order"


def test_broker_outage_loses_nothing(plc: ModbusSimulator, broker: LocalBroker,
                                     collector: Collector, run_agent: RunAgent) -> None:
    agent: Agent = run_agent(broker.port, [
        modbus_device("intake-plc", plc.port, unit=1, interval="50ms"),
        modbus_device("outflow-plc", plc.port, unit=2, interval="70ms"),
    ])
    wait_until(lambda: len(collector.readings()) >= 20, what="readings before the outage")
    broker.stop()
    wait_until(lambda: not agent.publisher.connected.is_set(), what="agent to see the outage")
    before = agent.queue.stats().next_seq
    wait_until(lambda: agent.queue.stats().next_seq - before >= 100, what="readings to pile up")
    assert agent.queue.stats().depth >= 100
    broker.start()
    wait_until(lambda: agent.queue.stats().depth < 20, timeout=15, what="backlog to drain")
    agent.scheduler.stop()  # no new readings; what is queued must still arrive
    last_seq = agent.queue.stats().next_seq - 1
    wait_until(lambda: agent.queue.stats().depth == 0, what="queue to empty")
    wait_until(lambda: collector.seqs() >= set(range(1, last_seq + 1)), what="every seq")
    _assert_complete_and_ordered(collector, last_seq)
    assert last_seq - before >= 100


def test_dead_device_does_not_stop_the_others(plc: ModbusSimulator, broker: LocalBroker,
                                              collector: Collector, run_agent: RunAgent) -> None:
    dead_port = free_port()  # nothing listens there
    agent: Agent = run_agent(broker.port, [
        modbus_device("healthy", plc.port, interval="50ms"),
        modbus_device("dead", dead_port, interval="50ms"),
    ])
    wait_until(lambda: sum(r["device"] == "healthy" for r in collector.readings()) >= 40,
               what="healthy device readings")
    dead = [r for r in collector.readings() if r["device"] == "dead"]
    assert dead, "a failed poll must still say so in the telemetry"
    assert {r["quality"] for r in dead} == {"unreachable"}
    assert all(r["value"] is None for r in dead)
    healthy_runner, dead_runner = agent.runners
    assert healthy_runner.online and not dead_runner.online
    # backoff: the dead device is attempted far less often than the healthy one is polled
    assert dead_runner.polls < healthy_runner.polls / 2


def test_device_that_returns_is_polled_again(broker: LocalBroker, collector: Collector,
                                             run_agent: RunAgent) -> None:
    port = free_port()
    agent: Agent = run_agent(broker.port, [modbus_device("late-plc", port, interval="50ms")])
    wait_until(lambda: any(r["quality"] == "unreachable" for r in collector.readings()),
               what="device reported unreachable")
    sim = ModbusSimulator(port=port)
    sim.set_value(1, "holding", 102, "uint16", 77)
    sim.start()
    try:
        wait_until(lambda: any(r["quality"] == "good" for r in collector.readings()),
                   timeout=10, what="device back online")
        good = [r for r in collector.readings() if r["metric"] == "chlorine"
                and r["quality"] == "good"]
        assert good[-1]["value"] == 0.77
        assert agent.runners[0].online
    finally:
        sim.stop()
