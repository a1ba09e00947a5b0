"""Throughput scenarios: `pipeline` (sources -> queue -> broker at full speed), `drain` (a
1M-reading backlog after an outage) and `modbus` (polling one server back to back). Each
measures the raw parts beside the agent in the same run and reports the ratio."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.config.load import AgentConfig
from agent.core import log
from agent.core.model import Reading, now_ms
from agent.polling.runner import DeviceRunner
from agent.service.runtime import Agent
from agent.sim.broker import LocalBroker, free_port
from agent.sim.modbus import ModbusSimulator
from drivers.base import DeviceConfig
from tests.bench.common import (
    ROOT,
    AgentProcess,
    BenchError,
    Counter,
    depth,
    fill,
    spread,
    trusted,
    wait_for,
)
from tests.support import modbus_device, write_config

POINTS_PER_POLL = 100


def _config(work: Path, broker_port: int, sync: str = "full",
            devices: list[dict[str, Any]] | None = None) -> AgentConfig:
    return AgentConfig.model_validate({
        "gateway": {"id": "bench", "clock": "trusted"},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "health_interval": 0},
        "queue": {"path": str(work / "queue.db"), "synchronous": sync},
        "log": {"level": "warning", "format": "json"},
        "devices": devices or [modbus_device("plc", 1, interval="1h")],  # never polled
    })


def raw_pipeline(db: Path, port: int, seconds: float) -> tuple[float, float]:
    """The raw parts alone, in one thread: batched SQLite insert (WAL, synchronous FULL) of
    1,000 rows, select them, publish 100-reading JSON messages at QoS 1 with every PUBACK
    awaited (max_inflight 20), delete on PUBACK. Returns (readings/s, CPU us per reading)."""
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
    seq, done = 0, 0
    inflight: dict[int, tuple[int, int]] = {}
    end = time.perf_counter() + seconds
    t0, c0 = time.perf_counter(), time.process_time()
    while time.perf_counter() < end:
        rows = [(seq + i + 1, "plc", f"m{i % 10}", str(i * 0.5), now_ms()) for i in range(1000)]
        con.execute("BEGIN")
        con.executemany("INSERT INTO r VALUES (?,?,?,?,?)", rows)
        con.execute("COMMIT")
        got = con.execute("SELECT seq, metric, value, ts FROM r WHERE seq > ? ORDER BY seq"
                          " LIMIT 1000", (seq,)).fetchall()
        for i in range(0, len(got), 100):
            chunk = got[i:i + 100]
            body = json.dumps({"readings": [{"seq": s, "metric": m, "value": v, "ts": t}
                                            for s, m, v, t in chunk]})
            info = c.publish("raw/plc/telemetry", body, qos=1)
            inflight[info.mid] = (chunk[0][0], chunk[-1][0])
        seq += 1000
        with cond:
            while len(inflight) > 20:
                cond.wait(0.5)
                for mid in acked:
                    first, last = inflight.pop(mid, (0, -1))
                    con.execute("DELETE FROM r WHERE seq BETWEEN ? AND ?", (first, last))
                    done += last - first + 1
                acked.clear()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    c.disconnect()
    c.loop_stop()
    con.close()
    return done / elapsed, cpu / max(done, 1) * 1e6


class SimSource:
    """A driver whose device answers at once with `points` readings: a source at full speed."""

    bus = None
    passive = False

    def __init__(self, name: str, points: int = POINTS_PER_POLL) -> None:
        self.config = DeviceConfig(name=name, driver="sim", interval=1.0)
        self._names = [f"m{i}" for i in range(points)]

    def metrics(self) -> list[tuple[str, str | None]]:
        return [(n, "unit") for n in self._names]

    def open(self) -> None: ...

    def close(self) -> None: ...

    def poll(self) -> list[Reading]:
        ts, device = now_ms(), self.config.name
        return [Reading(device, n, i * 0.5, "unit", ts) for i, n in enumerate(self._names)]


def agent_pipeline(work: Path, port: int, seconds: float, sources: int) -> tuple[float, float]:
    """The agent's runners, queue, forwarder and publisher with `sources` simulated devices of
    100 points each, each polled back to back on its own thread, every poll committed (FULL).
    Readings/s counted by a subscriber process, and the agent's CPU us per reading."""
    counter = Counter(port, work)
    agent = Agent(_config(work, port))
    agent.publisher.start()
    agent.forwarder.start()
    stop = threading.Event()
    runners = [DeviceRunner(SimSource(f"plc-{k}"), agent.queue) for k in range(sources)]

    def source(runner: DeviceRunner) -> None:
        while not stop.is_set():
            runner.poll_once()

    try:
        wait_for(agent.publisher.connected.is_set, 20, "the agent to connect")
        threads = [threading.Thread(target=source, args=(r,)) for r in runners]
        before = counter.readings
        t0, c0 = time.perf_counter(), time.process_time()
        for th in threads:
            th.start()
        time.sleep(seconds)  # the measurement window
        stop.set()
        for th in threads:
            th.join()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        time.sleep(0.3)  # the counter writes its figures every 0.2 s
        delivered = counter.readings - before
        for r in runners:
            r.close()
        wait_for(lambda: agent.queue.stats().depth == 0, 120, "the queue to drain")
    finally:
        stop.set()
        agent.forwarder.stop()
        agent.publisher.stop()
        agent.queue.close()
        counter.stop()
    return delivered / elapsed, cpu / max(delivered, 1) * 1e6


def pipeline(quick: bool) -> dict[str, Any]:
    """Simulated sources at full speed -> queue (durable) -> broker (QoS 1), counted by a
    subscriber, beside the raw SQLite + paho loop in the same run; repeated for the spread."""
    log.setup("warning", "json")
    seconds, reps = (4.0, 1) if quick else (8.0, 3)
    raw, one, many, raw_cpu, agent_cpu = [], [], [], [], []
    for _ in range(reps):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            broker = LocalBroker(work / "broker")
            broker.start()
            try:
                rate, cpu = raw_pipeline(work / "raw.db", broker.port, seconds)
                raw.append(rate)
                raw_cpu.append(cpu)
                (work / "one").mkdir()
                one.append(agent_pipeline(work / "one", broker.port, seconds, 1)[0])
                (work / "many").mkdir()
                rate, cpu = agent_pipeline(work / "many", broker.port, seconds, 8)
                many.append(rate)
                agent_cpu.append(cpu)
            finally:
                broker.stop()
    return {
        "window_s": seconds, "repeats": reps,
        "raw_sqlite_mqtt_per_s": _r(spread(raw)),
        "agent_1_device_per_s": _r(spread(one)),
        "agent_8_devices_per_s": _r(spread(many)),
        "ratio_8_devices_vs_raw": _r(spread([m / r for m, r in zip(many, raw, strict=True)]), 2),
        "ratio_1_device_vs_raw": _r(spread([m / r for m, r in zip(one, raw, strict=True)]), 2),
        "raw_cpu_us_per_reading": _r(spread(raw_cpu), 1),
        "agent_cpu_us_per_reading": _r(spread(agent_cpu), 1),
        "target_per_s": 100_000,
    }


def drain(quick: bool) -> dict[str, Any]:
    """1M readings queued while the broker was down; then the broker is up and the agent
    starts: seconds until all are acknowledged (deleted from the queue)."""
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
        trusted(cfg)
        t0 = time.perf_counter()
        agent = AgentProcess(cfg)
        try:
            wait_for(lambda: depth(work / "queue.db") < 50, 600, "the backlog to drain",
                     interval=0.05)
            drain_s = time.perf_counter() - t0
        finally:
            agent.stop()
            sim.stop()
            broker.stop()
    return {"queued_readings": n, "fill_s": round(fill_s, 2),
            "drain_s_incl_startup": round(drain_s, 2),
            "drain_readings_per_s": round(n / drain_s), "target_s_for_1m": 10}


def modbus(quick: bool) -> dict[str, Any]:
    """The agent's runner (driver, reporting, queue) polling one pymodbus TCP server back to
    back (10 registers, one request per poll, each poll committed) vs a bare pymodbus client
    loop, alternated in the same run; and a 60-point scattered map's requests per cycle. The
    server is its own process, as a device is: in this one it would take the GIL from both."""
    from pymodbus.client import ModbusTcpClient

    seconds, reps = (2.0, 1) if quick else (4.0, 3)
    raw, full, normal, fsync_us = [], [], [], []
    with ServerProcess() as port, tempfile.TemporaryDirectory() as tmp:
        for _ in range(reps):
            client = ModbusTcpClient("127.0.0.1", port=port)
            client.connect()
            n, end = 0, time.perf_counter() + seconds
            t0 = time.perf_counter()
            while time.perf_counter() < end:
                client.read_holding_registers(0, count=10, device_id=1)
                n += 1
            raw.append(n / (time.perf_counter() - t0))
            client.close()
            full.append(_agent_polls(port, seconds, "full"))
            normal.append(_agent_polls(port, seconds, "normal"))
            fsync_us.append(_fsync_us(Path(tmp)))
    return {"repeats": reps, "raw_requests_per_s": _r(spread(raw)),
            "agent_requests_per_s_sync_full": _r(spread(full)),
            "agent_requests_per_s_sync_normal": _r(spread(normal)),
            "ratio_full_vs_raw": _r(spread([a / b for a, b in zip(full, raw, strict=True)]), 2),
            "ratio_normal_vs_raw": _r(spread([a / b for a, b in zip(normal, raw, strict=True)]),
                                      2),
            "target_ratio": 0.8, "fsync_us": _r(spread(fsync_us)), **_scattered_plan()}


class ServerProcess:
    """A pymodbus TCP server (agent.sim.modbus) in a child process; yields its port."""

    def __enter__(self) -> int:
        self.port = free_port()
        code = ("import sys; from agent.sim.modbus import ModbusSimulator; "
                f"s = ModbusSimulator(port={self.port}); s.start(); print('up', flush=True); "
                "sys.stdin.read(); s.stop()")
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, cwd=ROOT)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"up":
            self.proc.kill()
            raise BenchError("the Modbus server process did not start")
        return self.port

    def __exit__(self, *_: object) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # its stdin at EOF: it stops
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _agent_polls(port: int, seconds: float, sync: str) -> float:
    """The real runner polling back to back: requests/s (the driver counts them)."""
    with tempfile.TemporaryDirectory() as tmp:
        points = [{"name": f"p{i}", "address": i, "type": "uint16"} for i in range(10)]
        agent = Agent(_config(Path(tmp), free_port(), sync,
                              [modbus_device("plc", port, points=points)]))
        runner = agent.runners[0]
        driver: Any = runner.driver
        runner.poll_once()  # connected
        before = driver.requests
        end = time.perf_counter() + seconds
        t0 = time.perf_counter()
        while time.perf_counter() < end:
            runner.poll_once()
        rate = (driver.requests - before) / (time.perf_counter() - t0)
        runner.close()
        agent.queue.close()
    return rate


def _fsync_us(where: Path) -> float:
    """One 4 kB append + fsync on the queue's disk, microseconds (median of 200)."""
    times = []
    with open(where / "fsync.probe", "ab") as f:
        for _ in range(200):
            t0 = time.perf_counter()
            f.write(b"x" * 4096)
            f.flush()
            os.fsync(f.fileno())
            times.append(time.perf_counter() - t0)
    return spread(times)["median"] * 1e6


def _scattered_plan() -> dict[str, int]:
    """60 float32 points spread over 300 input registers: requests per cycle."""
    import random

    from drivers.modbus.plan import Span, plan

    rng = random.Random(60)
    addresses = sorted(rng.sample(range(0, 300, 2), 60))
    spans = [Span("input", a, 2) for a in addresses]
    return {"scattered_points": 60, "requests_per_cycle_unplanned": 60,
            "requests_per_cycle_planned": len(plan(spans))}


def _r(s: dict[str, float], digits: int = 0) -> dict[str, float]:
    return {k: round(v, digits) if digits else round(v) for k, v in s.items()}
