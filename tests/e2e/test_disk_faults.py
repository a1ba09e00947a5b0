"""The whole agent on a disk that fails: its queue's filesystem turned read-only, frozen for
seconds, or its WAL removed before a kill -9. Real agents (processes where a stop or a kill is
the point, in-process where the test must reach inside), a real Mosquitto, a real pymodbus
server, a real loop-mounted ext4 (tests.peers.disk). What the agent took from a device is
written, or counted (dropped, lost) with a log line saying why; polling and the status page go
on; a stop never ends in a traceback."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

import agent.queue.store as queue_mod
from agent.config.load import load_config
from agent.service import health
from agent.service.runtime import Agent
from agent.sim.broker import LocalBroker, free_port
from agent.sim.modbus import ModbusSimulator
from tests.peers.disk import make_read_only, mount_ext4, unmount_ext4
from tests.support import (
    EDGE_AGENT,
    Collector,
    modbus_device,
    next_seq_in,
    wait_until,
    write_config,
)


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "disk"
    mount_ext4(tmp_path / "disk.img", mnt)
    try:
        yield mnt
    finally:
        unmount_ext4(mnt)


def config(tmp_path: Path, broker_port: int, plc: ModbusSimulator, queue: Path,
           page_port: int | None = None, interval: str = "20ms") -> Path:
    cfg = write_config(tmp_path / "agent.yaml", broker_port=broker_port, queue=str(queue),
                       devices=[modbus_device("plc", plc.port, interval=interval)])
    doc = json.loads(cfg.read_text())
    doc["queue"]["min_free"] = 0  # the test disk is smaller than the default reserve
    if page_port is not None:
        doc["status_page"] = {"enabled": True, "port": page_port}
    cfg.write_text(json.dumps(doc))
    return cfg


def get(port: int, path: str, timeout: float = 5.0) -> tuple[bytes, float]:
    """GET from the status page: the body and how long the answer took."""
    t0 = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        body = r.read()
    return body, time.monotonic() - t0


def metric(text: bytes, name: str) -> float:
    for line in text.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def log_lines(stderr: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_sigterm_on_a_read_only_disk_counts_what_it_held_and_exits_cleanly(
        tmp_path: Path, ext4: Path, plc: ModbusSimulator, broker: LocalBroker,
        collector: Collector) -> None:
    db, page = ext4 / "queue.db", free_port()
    cfg = config(tmp_path, broker.port, plc, db, page)
    proc = subprocess.Popen([*EDGE_AGENT, "run", "-c", str(cfg)], stderr=subprocess.PIPE,
                            text=True)
    try:
        wait_until(lambda: next_seq_in(db) > 20, timeout=20, what="readings committed")
        make_read_only(ext4)  # as the kernel does after an SD card's I/O error
        wait_until(lambda: metric(get(page, "/metrics")[0], "edge_agent_queue_pending") > 40,
                   timeout=20, what="polls held in memory, visible in /metrics")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    lines = log_lines(err)
    (stopped,) = [e for e in lines if e["event"] == "agent stopped"]
    assert stopped["dropped"] > 40 and stopped["pending"] == 0
    drops = [e for e in lines if e["event"] == "queue readings dropped"]
    assert drops and drops[-1]["cause"] == "read-only file system"
    assert sum(e["count"] for e in drops) == stopped["dropped"], "each one counted and said why"


def test_a_read_only_disk_shows_dropped_readings_while_running(
        tmp_path: Path, ext4: Path, plc: ModbusSimulator, broker: LocalBroker,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queue_mod, "MAX_PENDING", 40)  # the memory buffer, made small
    page = free_port()
    agent = Agent(load_config(config(tmp_path, broker.port, plc, ext4 / "queue.db", page)))
    agent.start()
    try:
        wait_until(lambda: agent.queue.stats().next_seq > 20, what="readings committed")
        make_read_only(ext4)
        wait_until(lambda: metric(get(page, "/metrics")[0],
                                  "edge_agent_queue_dropped_total") > 10,
                   what="readings dropped past the buffer, in /metrics")
        q = health.snapshot(agent)["queue"]
        assert q["pending"] == 40 and q["dropped"] > 10
        status = json.loads(get(page, "/status.json")[0])
        assert status["queue"]["dropped"] > 10
    finally:
        with structlog.testing.capture_logs() as logs:
            agent.stop()  # never raises
    (stopped,) = [e for e in logs if e["event"] == "agent stopped"]
    assert stopped["dropped"] == agent.queue.stats().dropped > 50
    drops = [e for e in logs if e["event"] == "queue readings dropped"]
    assert drops and all(e["cause"] == "read-only file system" for e in drops)
