"""Live reload against real peers: devices added, removed and changed while readings are queued
and the broker is down; then the broker comes back and every reading arrives exactly once."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from agent.config.load import load_config
from agent.service.reload import plan
from agent.service.runtime import Agent
from agent.sim.broker import LocalBroker, free_port
from agent.sim.modbus import ModbusSimulator
from tests.support import Collector, modbus_device, next_seq_in, wait_until, write_config

TURBIDITY = {"name": "turbidity", "address": 100, "type": "float32", "unit": "NTU"}
CHLORINE = {"name": "chlorine", "address": 102, "type": "uint16", "scale": 0.01}


def _per_device(db: Path) -> Counter[tuple[str, str]]:
    """(device, metric) -> readings queued, read by a second connection."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return Counter({(d, m): n for d, m, n in con.execute(
            "SELECT device, metric, count(*) FROM readings GROUP BY device, metric")})
    finally:
        con.close()


def _config(tmp_path: Path, port: int, devices: list[dict[str, Any]], **mqtt: Any) -> Path:
    return write_config(tmp_path / "agent.yaml", broker_port=port, devices=devices, **mqtt)


def test_reload_adds_removes_and_changes_devices_losing_nothing(
        tmp_path: Path, plc: ModbusSimulator, mosquitto_bin: str) -> None:
    plc.set_value(1, "holding", 100, "float32", 0.5)
    plc.set_value(2, "holding", 102, "uint16", 150)
    broker = LocalBroker(tmp_path / "broker", persistent=True)  # not started: uplink down
    keep = modbus_device("keep", plc.port, unit=1, interval="50ms", points=[TURBIDITY])
    change = modbus_device("change", plc.port, unit=2, interval="50ms", points=[TURBIDITY])
    gone = modbus_device("gone", plc.port, unit=1, interval="50ms", points=[TURBIDITY])
    cfg = _config(tmp_path, broker.port, [keep, change, gone])
    db = tmp_path / "queue.db"
    agent = Agent(load_config(cfg), str(cfg))
    agent.start()
    try:
        wait_until(lambda: min(_per_device(db)[(d, "turbidity")] for d in
                               ("keep", "change", "gone")) >= 5, what="all three polled")
        kept = next(r for r in agent.runners if r.name == "keep")
        opens = kept.driver.port.opens  # type: ignore[attr-defined]

        added = modbus_device("added", plc.port, unit=2, interval="50ms", points=[CHLORINE])
        changed = dict(change, points=[TURBIDITY, CHLORINE])
        _config(tmp_path, broker.port, [keep, changed, added])
        assert agent.reload(str(cfg))

        assert [r.name for r in agent.runners] == ["keep", "change", "added"]
        assert agent.runners[0] is kept  # untouched: same runner, same connection
        wait_until(lambda: _per_device(db)[("added", "chlorine")] >= 5
                   and _per_device(db)[("change", "chlorine")] >= 5, what="new config polled")
        gone_after = _per_device(db)[("gone", "turbidity")]
        polls = kept.polls
        wait_until(lambda: kept.polls >= polls + 5, what="more polls of the kept device")
        assert _per_device(db)[("gone", "turbidity")] == gone_after  # removed: not polled
        assert kept.driver.port.opens == opens  # type: ignore[attr-defined]
        assert agent.publisher.connected.is_set() is False

        broker.start()
        collector = Collector(broker.port)
        try:
            issued = agent.queue.stats().next_seq - 1
            wait_until(lambda: collector.seqs() >= set(range(1, issued + 1)), timeout=20,
                       what="every reading queued across the reload delivered")
            online = [s for s in collector.statuses() if s["state"] == "online"]
            assert online[-1]["devices"] == ["keep", "change", "added"]
            _config(tmp_path, broker.port, [keep, changed])
            assert agent.reload(str(cfg))
            wait_until(lambda: [s for s in collector.statuses() if s["state"] == "online"][-1]
                       ["devices"] == ["keep", "change"], what="status after a live reload")
            agent.stop()
            sent = Counter(r["seq"] for r in collector.readings())
            assert set(sent) == set(range(1, max(sent) + 1))  # no gap: nothing lost
            assert max(sent.values()) == 1  # nothing sent twice
            by_device = Counter(r["device"] for r in collector.readings())
            assert set(by_device) == {"keep", "change", "gone", "added"}
            values = {r["value"] for r in collector.readings() if r["metric"] == "chlorine"}
            assert values == {1.5}
        finally:
            collector.stop()
    finally:
        agent.stop()
        broker.stop()


def test_invalid_or_restart_only_changes_keep_the_agent_running(
        tmp_path: Path, plc: ModbusSimulator) -> None:
    dev = modbus_device("plc", plc.port, interval="50ms", points=[TURBIDITY])
    cfg = _config(tmp_path, 1, [dev])
    agent = Agent(load_config(cfg), str(cfg))
    agent.start()
    try:
        runner = agent.runners[0]
        cfg.write_text(cfg.read_text().replace('"interval": "50ms"', '"interval": "5 sec"'))
        assert agent.reload(str(cfg)) is False
        assert agent.status_file.last_reload is not None
        [error] = agent.status_file.last_reload["errors"]
        assert error.startswith(f"{cfg}:") and "'5 sec' is not a duration" in error
        polls = runner.polls
        wait_until(lambda: runner.polls > polls + 3, what="still polling the old config")

        _config(tmp_path, 2, [dev], keepalive="40s")  # mqtt changes need a restart
        assert agent.reload(str(cfg)) is True
        assert agent.runners == [runner]
        assert agent.status_file.last_reload["restart_needed"] == ["mqtt.port", "mqtt.keepalive"]
        assert (agent.config.mqtt.port, agent.config.mqtt.keepalive) == (1, 30.0)  # as running

        new = load_config(cfg)  # a plan is carried out by the one method that changes the agent
        agent.apply(plan(agent.config, new), new)
        assert agent.runners == [runner] and agent.config.mqtt.port == 1
    finally:
        agent.stop()


def test_plan_marks_devices_on_a_changed_bus_as_changed(tmp_path: Path) -> None:
    def config(baud: int, unit: int, disabled: bool = False) -> Any:
        path = tmp_path / "agent.yaml"
        path.write_text(f"""gateway: {{id: gw}}
mqtt: {{host: h}}
queue: {{path: q.db}}
log: {{level: {"debug" if disabled else "info"}}}
buses: [{{name: a, port: /dev/ttyUSB0, baudrate: {baud}}}, {{name: b, port: /dev/ttyUSB1}}]
devices:
  - {{name: on-a, driver: modbus_rtu, bus: a, unit: {unit}, points: [{{name: x, address: 0}}]}}
  - {{name: on-b, driver: modbus_rtu, bus: b, points: [{{name: x, address: 0}}]}}
  - {{name: tcp, driver: modbus_tcp, host: h, enabled: {str(not disabled).lower()},
     points: [{{name: x, address: 0}}]}}
""")
        return load_config(path)

    base = config(9600, 1)
    assert plan(base, config(9600, 1)).noop
    p = plan(base, config(19200, 1))
    assert (p.changed, p.unchanged, p.buses_closed) == (("on-a",), ("on-b", "tcp"), ("a",))
    assert [b.name for b in p.buses_opened] == ["a"] and not p.restart_keys
    p = plan(base, config(9600, 2, disabled=True))
    assert (p.changed, p.removed, p.buses_opened, p.log_changed) == (("on-a",), ("tcp",), (),
                                                                     True)


_STUCK_RUN = """
import sys, threading
from agent.service import reload, runtime
real, release = reload.load, threading.Event()
def stuck(path):  # an NFS mount that stopped answering
    print("reading the config", flush=True)
    release.wait(600)
    return real(path)
reload.load, reload.RELOAD_DEADLINE = stuck, 0.5
sys.exit(runtime.run(sys.argv[1]))
"""


def test_a_reload_that_never_finishes_reading_neither_blocks_a_stop_nor_is_applied(
        tmp_path: Path, plc: ModbusSimulator) -> None:
    """The read happens on its own thread: a read past the deadline is refused, polling goes on
    meanwhile, and SIGTERM during a read stops the agent at once."""
    cfg = write_config(tmp_path / "agent.yaml", broker_port=free_port(),
                       devices=[modbus_device("plc", plc.port, interval="50ms")])
    out = tmp_path / "agent.log"
    with out.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-c", _STUCK_RUN, str(cfg)], stdout=sink,
                                stderr=subprocess.STDOUT)
    try:
        db = tmp_path / "queue.db"
        wait_until(lambda: db.exists() and next_seq_in(db) > 5, what="polling")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "config reload refused" in out.read_text(), what="refused in time")
        polled = next_seq_in(db)
        wait_until(lambda: next_seq_in(db) > polled + 5, what="still polling")
        proc.send_signal(signal.SIGHUP)  # stuck again: the stop must not wait for it
        wait_until(lambda: out.read_text().count("reading the config") == 2, what="2nd reload")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        proc.kill()
        proc.wait()
    text = out.read_text()
    assert "took longer than 0.5 s; not applied" in text and "Traceback" not in text
