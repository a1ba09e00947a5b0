"""Benchmark scenarios. Each takes `quick` and returns a flat dict of named figures."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.localbroker import LocalBroker, free_port
from agent.model import Reading, now_ms
from agent.queue import Queue
from agent.simulator import ModbusSimulator
from tests.support import modbus_device, wait_until, write_config

EDGE_AGENT = str(Path(sys.executable).parent / "edge-agent")


def fill(db: Path, n: int, devices: int = 4) -> float:
    """Queue `n` readings (as if polled while offline); returns seconds taken."""
    q = Queue(db, synchronous="normal", check_every=3600)
    t0 = time.perf_counter()
    ts = now_ms() - 86_400_000
    per = 10_000
    for start in range(0, n, per):
        q.put([Reading(f"plc-{i % devices}", f"m{i % 7}", (start + i) * 0.25, "unit", ts + i)
               for i in range(min(per, n - start))])
    q.close()
    return time.perf_counter() - t0


def _depth(db: Path) -> int:
    """Readings queued, read beside the running agent (0 before it created the queue)."""
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=10)
    try:
        row = con.execute("SELECT value FROM meta WHERE key='depth'").fetchone()
        return int(row[0]) if row else 0
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _agent_rss(workdir: Path, queued: int, sim_port: int) -> int:
    """RSS (kB) of `edge-agent run` after 3 s of polling with the uplink down."""
    workdir.mkdir()
    if queued:
        fill(workdir / "queue.db", queued)
    cfg = write_config(workdir / "agent.yaml", broker_port=free_port(),
                       devices=[modbus_device("plc", sim_port, interval="100ms")])
    proc = subprocess.Popen([EDGE_AGENT, "run", "-c", str(cfg)], stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _depth(workdir / "queue.db") > queued + 40, timeout=30,
                   what="agent polling")
        time.sleep(3)  # steady state: measured, not synchronisation
        return _rss_kb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


def queue_rss(quick: bool) -> dict[str, Any]:
    """Agent RSS with an empty queue vs with 1M readings queued (uplink down)."""
    n = 100_000 if quick else 1_000_000
    sim = ModbusSimulator(port=free_port())
    sim.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            empty = _agent_rss(Path(tmp) / "empty", 0, sim.port)
            full = _agent_rss(Path(tmp) / "full", n, sim.port)
    finally:
        sim.stop()
    return {"queued_readings": n, "rss_empty_kb": empty, "rss_queued_kb": full,
            "rss_delta_kb": full - empty}


def drain(quick: bool) -> dict[str, Any]:
    """1M readings queued while the broker was down; time until all are acknowledged."""
    n = 100_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        fill_s = fill(work / "queue.db", n)
        broker = LocalBroker(work / "broker")
        broker.start()
        sim = ModbusSimulator(port=free_port())
        sim.start()
        cfg = write_config(work / "agent.yaml", broker_port=broker.port,
                           devices=[modbus_device("plc", sim.port, interval="1s")])
        t0 = time.perf_counter()
        proc = subprocess.Popen([EDGE_AGENT, "run", "-c", str(cfg)], stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: _depth(work / "queue.db") < 50, timeout=600, interval=0.05,
                       what="the backlog to drain")
            drain_s = time.perf_counter() - t0
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            sim.stop()
            broker.stop()
    return {"queued_readings": n, "fill_s": round(fill_s, 2),
            "drain_s_incl_startup": round(drain_s, 2),
            "drain_readings_per_s": round(n / drain_s)}
