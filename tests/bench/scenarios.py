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


class Counter:
    """The counting subscriber, as its own process (tests/bench/counter.py)."""

    def __init__(self, port: int, workdir: Path, latency: bool = False) -> None:
        import json as _json

        self._json = _json
        self.path = workdir / f"counter-{port}.json"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.counter", str(port), str(self.path),
             *(["--latency"] if latency else [])], cwd=Path(__file__).resolve().parents[2])
        wait_until(lambda: self.state().get("ready"), timeout=20, what="counter subscribed")

    def state(self) -> dict[str, Any]:
        try:
            return dict(self._json.loads(self.path.read_text()))
        except (OSError, ValueError):
            return {}

    @property
    def readings(self) -> int:
        return int(self.state().get("readings", 0))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _raw_pipeline(db: Path, port: int, seconds: float) -> float:
    """The raw parts alone: batched SQLite insert (FULL) + QoS 1 publish of 100-reading JSON
    messages with every PUBACK awaited (max_inflight 20) + delete. Readings/s."""
    import json as _json
    import threading

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    con = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute("CREATE TABLE r (seq INTEGER PRIMARY KEY, device TEXT, metric TEXT, value TEXT,"
                " ts INTEGER)")
    acked: list[int] = []
    cond = threading.Condition()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-bench")
    c.max_inflight_messages_set(20)

    def on_publish(*args: Any) -> None:
        with cond:
            acked.append(args[2])
            cond.notify()

    c.on_publish = on_publish
    c.connect("127.0.0.1", port)
    c.loop_start()
    seq, sent, done = 0, 0, 0
    inflight: dict[int, tuple[int, int]] = {}
    end = time.perf_counter() + seconds
    t0 = time.perf_counter()
    while time.perf_counter() < end:
        rows = [(seq + i + 1, "plc", f"m{i % 10}", str(i * 0.5), now_ms()) for i in range(1000)]
        con.execute("BEGIN")
        con.executemany("INSERT INTO r VALUES (?,?,?,?,?)", rows)
        con.execute("COMMIT")
        got = con.execute("SELECT seq, metric, value, ts FROM r WHERE seq > ? ORDER BY seq"
                          " LIMIT 1000", (seq,)).fetchall()
        for i in range(0, len(got), 100):
            chunk = got[i:i + 100]
            body = _json.dumps({"readings": [{"seq": s, "metric": m, "value": v, "ts": t}
                                             for s, m, v, t in chunk]})
            info = c.publish("raw/plc/telemetry", body, qos=1)
            inflight[info.mid] = (chunk[0][0], chunk[-1][0])
            sent += 1
        seq += 1000
        with cond:
            while len(inflight) > 20:
                cond.wait(0.5)
                for mid in acked:
                    first, last = inflight.pop(mid, (0, -1))
                    con.execute("DELETE FROM r WHERE seq BETWEEN ? AND ?", (first, last))
                    done += last - first + 1
                acked.clear()
    elapsed = time.perf_counter() - t0
    c.disconnect()
    c.loop_stop()
    con.close()
    return done / elapsed


def pipeline(quick: bool, per_put: int = 100) -> dict[str, Any]:
    """Simulated sources at full speed -> queue (durable) -> broker (QoS 1), counted by a
    subscriber, beside the raw SQLite + paho loop in the same run."""
    import threading

    from agent.config import AgentConfig
    from agent.runtime import Agent

    seconds = 5.0 if quick else 20.0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        broker = LocalBroker(work / "broker")
        broker.start()
        try:
            raw = _raw_pipeline(work / "raw.db", broker.port, seconds)
            counter = Counter(broker.port, work)
            cfg = AgentConfig.model_validate({
                "gateway": {"id": "bench", "clock": "trusted"},
                "mqtt": {"host": "127.0.0.1", "port": broker.port, "health_interval": 0},
                "queue": {"path": str(work / "queue.db")},
                "log": {"level": "warning", "format": "json"},
                "devices": [modbus_device("plc", 1, interval="1h")],  # never answers: unused
            })
            agent = Agent(cfg)
            agent.publisher.start()
            agent.forwarder.start()
            stop = threading.Event()
            produced = 0

            def source() -> None:  # a device with `per_put` points, polled back to back
                nonlocal produced
                while not stop.is_set():
                    ts = now_ms()
                    agent.queue.put([Reading("plc", f"m{i}", i * 0.5, "unit", ts)
                                     for i in range(per_put)])
                    produced += per_put

            wait_until(agent.publisher.connected.is_set, what="agent connected")
            th = threading.Thread(target=source)
            t0 = time.perf_counter()
            th.start()
            time.sleep(seconds)  # the measurement window
            stop.set()
            th.join()
            elapsed = time.perf_counter() - t0
            time.sleep(0.25)  # the counter writes its figures every 0.2 s
            delivered = counter.readings
            wait_until(lambda: agent.queue.stats().depth == 0, timeout=120,
                       what="the queue to drain")
            agent.forwarder.stop()
            agent.publisher.stop()
            agent.queue.close()
            counter.stop()
        finally:
            broker.stop()
    rate = delivered / elapsed
    return {"seconds": seconds, "agent_delivered_per_s": round(rate),
            "agent_produced_per_s": round(produced / elapsed),
            "raw_sqlite_mqtt_per_s": round(raw), "ratio_agent_vs_raw": round(rate / raw, 2),
            "target_per_s": 100_000}


def modbus(quick: bool) -> dict[str, Any]:
    """The agent polling one pymodbus TCP server back to back (a 10-register device, planned
    into one request, each poll queued durably) vs a bare pymodbus client loop, same run; and
    the requests per cycle of a 60-point map scattered over 300 registers."""
    from pymodbus.client import ModbusTcpClient

    seconds = 3.0 if quick else 10.0
    sim = ModbusSimulator(port=free_port())
    sim.start()
    try:
        client = ModbusTcpClient("127.0.0.1", port=sim.port)
        client.connect()
        n, end = 0, time.perf_counter() + seconds
        t0 = time.perf_counter()
        while time.perf_counter() < end:
            client.read_holding_registers(0, count=10, device_id=1)
            n += 1
        raw = n / (time.perf_counter() - t0)
        client.close()
        full = _agent_polls(sim, seconds, "full")
        normal = _agent_polls(sim, seconds, "normal")
    finally:
        sim.stop()
    return {"raw_requests_per_s": round(raw),
            "agent_requests_per_s_sync_full": round(full),
            "agent_requests_per_s_sync_normal": round(normal),
            "ratio_full_vs_raw": round(full / raw, 2),
            "ratio_normal_vs_raw": round(normal / raw, 2), **_scattered_plan()}


def _agent_polls(sim: ModbusSimulator, seconds: float, sync: str) -> float:
    """The real runner (driver, reporting, queue) polling back to back: requests/s."""
    from agent.config import AgentConfig
    from agent.runtime import Agent

    with tempfile.TemporaryDirectory() as tmp:
        points = [{"name": f"p{i}", "address": i, "type": "uint16"} for i in range(10)]
        cfg = AgentConfig.model_validate({
            "gateway": {"id": "bench", "clock": "trusted"},
            "mqtt": {"host": "127.0.0.1", "port": free_port(), "health_interval": 0},
            "queue": {"path": str(Path(tmp) / "queue.db"), "synchronous": sync},
            "log": {"level": "warning", "format": "json"},
            "devices": [modbus_device("plc", sim.port, points=points)],
        })
        agent = Agent(cfg)
        runner = agent.runners[0]
        before = sim.requests
        end = time.perf_counter() + seconds
        t0 = time.perf_counter()
        while time.perf_counter() < end:
            runner.poll_once()
        rate = (sim.requests - before) / (time.perf_counter() - t0)
        runner.close()
        agent.queue.close()
    return rate


def _scattered_plan() -> dict[str, int]:
    """60 float32 points spread over 300 input registers: requests per cycle."""
    import random

    from drivers.modbus_plan import Span, plan

    rng = random.Random(60)
    addresses = sorted(rng.sample(range(0, 300, 2), 60))
    spans = [Span("input", a, 2) for a in addresses]
    return {"scattered_points": 60, "requests_per_cycle_unplanned": 60,
            "requests_per_cycle_planned": len(plan(spans))}
