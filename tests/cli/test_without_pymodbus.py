"""pymodbus is the demo's and the tests' (the `demo` extra), never the agent's: nothing on the
runtime path imports it, and `edge-agent demo` without it says what to install.

Each check runs in a fresh interpreter (this one has pymodbus loaded by the test peers) that
calls the CLI's `main` and then reports every `pymodbus` module in `sys.modules`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

from agent.sim.broker import free_port
from agent.sim.modbus import ModbusSimulator
from tests.support import ROOT, modbus_device, next_seq_in, wait_until, write_config

REPORT = """
import atexit, json, os, sys
def report():
    with open(os.environ["PYMODBUS_REPORT"], "w") as f:
        json.dump(sorted(m for m in sys.modules if m.partition(".")[0] == "pymodbus"), f)
atexit.register(report)
for name in sys.argv[1].split(","):
    __import__(name)
if len(sys.argv) > 2:
    from agent.cli.main import main
    sys.exit(main(sys.argv[2:]))
"""
"""argv: modules to import (comma-separated), then an `edge-agent` command line, if any."""


def _runtime_modules() -> str:
    """Every module of agent/ and drivers/ but the simulators (which only `demo` imports)."""
    names = []
    for top in ("agent", "drivers"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if name != "agent.sim" and not name.startswith("agent.sim."):
                names.append(name)
    return ",".join(names)


def _start(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    report = tmp_path / f"pymodbus-{len(list(tmp_path.glob('pymodbus-*')))}.json"
    env = {**os.environ, "PYMODBUS_REPORT": str(report)}
    proc = subprocess.Popen([sys.executable, "-c", REPORT, _runtime_modules(), *args],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, report


def _loaded(report: Path) -> list[str]:
    loaded: list[str] = json.loads(report.read_text())
    return loaded


def test_pymodbus_is_an_extra_of_the_demo_and_the_tests() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not [d for d in project["dependencies"] if d.startswith("pymodbus")]
    extras = project["optional-dependencies"]
    assert [d for d in extras["test"] if d.startswith("pymodbus")] == extras["demo"]
    assert "'.[demo,test]'" in (ROOT / ".ci" / "setup").read_text()


def test_importing_the_runtime_and_check_load_no_pymodbus(tmp_path: Path) -> None:
    proc, report = _start(tmp_path, "check", "-c", str(ROOT / "config" / "agent.yaml"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    assert "device(s)" in out
    assert _loaded(report) == []


def test_run_polls_and_stops_without_loading_pymodbus(tmp_path: Path,
                                                      plc: ModbusSimulator) -> None:
    plc.set_value(1, "holding", 100, "float32", 1.5)
    cfg = write_config(tmp_path / "agent.yaml", broker_port=free_port(),  # no broker there
                       devices=[modbus_device("plc", plc.port, interval="50ms")])
    proc, report = _start(tmp_path, "run", "-c", str(cfg))
    try:
        # readings queued: the driver polled the device through the whole runtime path
        wait_until(lambda: next_seq_in(tmp_path / "queue.db") > 10 or proc.poll() is not None,
                   timeout=20, what="readings queued")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert next_seq_in(tmp_path / "queue.db") > 10, err
    assert _loaded(report) == []


def test_demo_without_pymodbus_names_the_extra(tmp_path: Path) -> None:
    script = ("import sys; sys.modules['pymodbus'] = None  # as if not installed\n"
              "from agent.cli.main import main; sys.exit(main(['demo', '--duration', '1']))")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        "edge-agent demo: its simulated PLC needs pymodbus, which is not installed; "
        "install the demo extra: pip install 'city-edge-agent[demo]'"]
