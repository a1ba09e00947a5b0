"""The real `edge-agent` command as a user runs it: run, stop, restart, bad configs, demo."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from pathlib import Path

from agent.sim.broker import LocalBroker
from agent.sim.modbus import ModbusSimulator
from tests.support import EDGE_AGENT, Collector, modbus_device, wait_until, write_config


def _queued(db: Path) -> tuple[int, int]:
    """(depth, last seq) read from the agent's queue file by a second connection."""
    if not db.exists():
        return (0, 0)
    con = sqlite3.connect(db, timeout=5)
    try:
        depth = con.execute("SELECT count(*) FROM readings").fetchone()[0]
        (next_seq,) = con.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
        return depth, next_seq - 1
    except sqlite3.OperationalError:  # tables not created yet
        return (0, 0)
    finally:
        con.close()


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=15)
    return proc.returncode, err


def test_restart_delivers_what_was_queued(tmp_path: Path, plc: ModbusSimulator,
                                          mosquitto_bin: str) -> None:
    broker = LocalBroker(tmp_path / "broker", persistent=True)  # not started: uplink is down
    cfg = write_config(tmp_path / "agent.yaml", broker_port=broker.port,
                       devices=[modbus_device("intake-plc", plc.port, interval="50ms")])
    db = tmp_path / "queue.db"

    first = subprocess.Popen([*EDGE_AGENT, "run", "-c", str(cfg)], stderr=subprocess.PIPE,
                             text=True)
    wait_until(lambda: _queued(db)[0] >= 40, what="readings queued while offline")
    code, err = _stop(first)
    assert code == 0, err
    assert "Traceback" not in err
    depth, last_seq = _queued(db)
    assert depth == last_seq >= 40, "nothing can have left: the broker was never up"

    broker.start()
    collector = Collector(broker.port)
    second = subprocess.Popen([*EDGE_AGENT, "run", "-c", str(cfg)], stderr=subprocess.PIPE,
                              text=True)
    try:
        wait_until(lambda: collector.seqs() >= set(range(1, last_seq + 1)), timeout=20,
                   what="readings queued by the first run")
        code, err = _stop(second)
        assert code == 0, err
        assert "Traceback" not in err
        assert collector.statuses()[-1]["state"] == "offline"  # clean stop says so
        assert not collector.invalid
    finally:
        if second.poll() is None:
            second.kill()
        collector.stop()
        broker.stop()


def test_run_refuses_an_invalid_config_with_its_location(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(
        "gateway: {id: gw-1}\n"
        "mqtt: {host: 127.0.0.1}\n"
        "queue: {path: q.db}\n"
        "devices:\n"
        "  - name: plc\n"
        "    driver: modbus_tcp\n"
        "    host: 127.0.0.1\n"
        "    points:\n"
        "      - {name: ph, address: 0, type: flot32}\n"
    )
    proc = subprocess.run([*EDGE_AGENT, "run", "-c", str(cfg)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 2
    assert f"{cfg}:9:" in proc.stderr and "flot32" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "q.db").exists(), "it must not start half-configured"


def test_check_reports_ok_and_errors(tmp_path: Path) -> None:
    good = write_config(tmp_path / "good.yaml", broker_port=1,
                        devices=[modbus_device("plc", 5020)])
    ok = subprocess.run([*EDGE_AGENT, "check", "-c", str(good)], capture_output=True,
                        text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert "1 device(s), 2 point(s)" in ok.stdout
    missing = subprocess.run([*EDGE_AGENT, "check", "-c", str(tmp_path / "nope.yaml")],
                             capture_output=True, text=True, timeout=30)
    assert missing.returncode == 1
    assert "nope.yaml:1:1:" in missing.stderr and "Traceback" not in missing.stderr


def test_example_config_is_valid() -> None:
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([*EDGE_AGENT, "check", "-c", str(root / "config" / "agent.yaml")],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_demo_shows_readings_and_stops_cleanly(mosquitto_bin: str) -> None:
    proc = subprocess.Popen([*EDGE_AGENT, "demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            lines.append(line)
            if sum("[broker]" in x and "ph=" in x for x in lines) >= 2:
                break
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines += out.splitlines()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    telemetry = [x for x in lines if "[broker]" in x and "ph=" in x]
    assert len(telemetry) >= 2
    for metric in ("ph=", "turbidity=", "chlorine=", "flow=", "level="):
        assert metric in telemetry[0], telemetry[0]
    assert any("demo: stopped" in x for x in lines)
