"""`edge-agent status` and reload in the real process: SIGHUP, the status file, JSON logs."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.cli import main as cli
from agent.cli import status
from agent.service import status_file
from agent.sim.modbus import ModbusSimulator
from tests.support import EDGE_AGENT, modbus_device, wait_until, write_config


def _doc(**over: Any) -> dict[str, Any]:
    boot_id, uptime = status_file._boot()
    pid = os.getpid()
    return {"v": 1, "state": "running", "pid": pid, "proc_start": status_file.proc_start(pid),
            "boot_id": boot_id, "boot_s": uptime, "written_ms": 0, "every_s": 5.0,
            "broker": "b:1883", "last_reload": None,
            "health": {"devices": {"plc": {"state": "offline", "last_ok": None,
                                           "last_error": "no reply", "last_error_ts": 0}}}
            } | over


def _state(tmp_path: Path, doc: dict[str, Any] | str) -> str:
    path = tmp_path / "q.db.status.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return status_file.read(path)[1]


def test_status_file_says_running_stopped_gone_or_hung(tmp_path: Path) -> None:
    assert _state(tmp_path, _doc()) == "running"
    assert _state(tmp_path, _doc(state="stopped")) == "stopped"
    assert _state(tmp_path, _doc(boot_s=_doc()["boot_s"] - 100)).startswith("hung?")
    assert "rebooted" in _state(tmp_path, _doc(boot_id="another-boot"))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    gone = _doc(pid=child.pid, proc_start=12345)
    assert _state(tmp_path, gone).startswith(f"gone: pid {child.pid} is not running")
    reused = _doc(proc_start=_doc()["proc_start"] + 1)  # our pid, but another process's start
    assert _state(tmp_path, reused).startswith("gone")
    assert _state(tmp_path, "{half a docum").startswith("cannot read")
    assert status_file.read(tmp_path / "nope.json")[0] is None


def test_render_shows_devices_queue_uplink_and_a_refused_reload() -> None:
    out = io.StringIO()
    doc = _doc(last_reload={"ok": False, "ts": 0, "errors": ["a.yaml:3:7: unit: bad"],
                            "restart_needed": []})
    status.render(doc, "running", out, now=90_000)
    text = out.getvalue()
    assert "agent:  running" in text
    assert "REFUSED (1 error(s)); still running the previous config" in text
    assert "a.yaml:3:7: unit: bad" in text
    assert "uplink: b:1883 DOWN (not connected yet)" in text
    assert "devices: 0 of 1 online" in text
    assert "plc     offline  never       no reply (90s ago)" in text


def _log_events(err: str) -> list[dict[str, Any]]:
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    for e in events:  # the fixed keys every event carries
        assert {"event", "device", "stage", "level", "timestamp"} <= set(e), e
    return events


def test_sighup_reloads_and_status_reports_it(tmp_path: Path, plc: ModbusSimulator,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "agent.yaml", broker_port=1,
                       devices=[modbus_device("plc", plc.port, interval="100ms")])
    state = tmp_path / "queue.db.status.json"
    proc = subprocess.Popen([*EDGE_AGENT, "run", "-c", str(cfg)], stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_until(lambda: state.exists(), what="status file")
        (tmp_path / "devices.d").mkdir()
        (tmp_path / "devices.d" / "plc2.yaml").write_text(
            f"name: plc2\ndriver: modbus_tcp\nhost: 127.0.0.1\nport: {plc.port}\nunit: 2\n"
            "interval: 100ms\npoints: [{name: level, address: 5}]\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "plc2" in _devices(state), what="device added by reload")
        (tmp_path / "devices.d" / "plc3.yaml").write_text("name: plc3\ndriver: modbus_tpc\n")
        proc.send_signal(signal.SIGHUP)
        wait_until(lambda: _reload(state) and not _reload(state)["ok"], what="reload refused")
        assert cli.main(["status", "-c", str(cfg)]) == 0
        shown = capsys.readouterr()
        assert "agent:  running" in shown.out
        assert "devices.d/plc3.yaml:2:9: driver: 'modbus_tpc' is not a known driver" in shown.out
        assert "plc2" in shown.out and proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "Traceback" not in err
    events = _log_events(err)
    names = [e["event"] for e in events]
    assert "config reloaded" in names and "config reload refused: still running the " \
        "previous config" in names
    [bad] = [e for e in events if e["event"] == "config error"]
    assert bad["at"] == f"{tmp_path}/devices.d/plc3.yaml:2:9"
    after = io.StringIO()
    assert status.status(str(cfg), out=after) == 1  # stopped cleanly: not running
    assert after.getvalue().startswith("agent:  stopped")


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return {}


def _devices(path: Path) -> dict[str, Any]:
    return _json(path).get("health", {}).get("devices", {})  # type: ignore[no-any-return]


def _reload(path: Path) -> dict[str, Any] | None:
    return _json(path).get("last_reload")
