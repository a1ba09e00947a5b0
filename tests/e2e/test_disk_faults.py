"""The whole agent on a disk that fails: its queue's filesystem turned read-only, frozen for
seconds, or its WAL removed before a kill -9. Real agents (processes where a stop or a kill is
the point, in-process where the test must reach inside), a real Mosquitto, a real pymodbus
server, a real loop-mounted ext4 (tests.peers.disk). What the agent took from a device is
written, or counted (dropped, lost) with a log line saying why; polling and the status page go
on; a stop never ends in a traceback."""

from __future__ import annotations

import itertools
import json
import signal
import sqlite3
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import structlog

import agent.queue.store as queue_mod
from agent.config.load import load_config
from agent.service import health, systemd
from agent.service.runtime import Agent
from agent.sim.broker import LocalBroker, free_port
from agent.sim.modbus import ModbusSimulator
from tests.peers.disk import freeze, make_read_only, unfreeze
from tests.support import (
    EDGE_AGENT,
    Collector,
    modbus_device,
    next_seq_in,
    wait_until,
    write_config,
)


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


def answer(port: int, path: str) -> bytes | None:
    """The status page's answer, None while it does not serve (yet)."""
    try:
        return get(port, path)[0]
    except OSError:
        return None


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
        # held in memory: exactly the bound; `pending` also counts a poll still in line
        assert len(agent.queue._pending) == 40 and q["pending"] >= 40 and q["dropped"] > 10
        status = json.loads(get(page, "/status.json")[0])
        assert status["queue"]["dropped"] > 10
    finally:
        with structlog.testing.capture_logs() as logs:
            agent.stop()  # never raises
    (stopped,) = [e for e in logs if e["event"] == "agent stopped"]
    assert stopped["dropped"] == agent.queue.stats().dropped > 50
    drops = [e for e in logs if e["event"] == "queue readings dropped"]
    assert drops and all(e["cause"] == "read-only file system" for e in drops)


def test_a_frozen_disk_stops_neither_polling_nor_the_status_page(
        tmp_path: Path, ext4: Path, plc: ModbusSimulator, broker: LocalBroker,
        collector: Collector) -> None:
    page = free_port()
    agent = Agent(load_config(config(tmp_path, broker.port, plc, ext4 / "queue.db", page)))
    agent.start()
    (runner,) = agent.runners
    answers: list[float] = []
    try:
        wait_until(lambda: agent.queue.stats().next_seq > 20, what="readings committed")
        armed, frozen = threading.Event(), threading.Event()
        armed.set()

        def freeze_after_a_commit() -> None:  # before anything read it: a read must then wait
            agent.forwarder.notify()
            if armed.is_set():  # (the committer's thread: the only caller)
                armed.clear()
                freeze(ext4)  # every write stalls, as on an SD card that stops answering
                frozen.set()

        agent.queue.set_listener(freeze_after_a_commit)
        try:
            assert frozen.wait(10)
            frozen_at, before = time.time(), runner.polls
            while time.time() - frozen_at < 6.0:
                body, took = get(page, "/status.json", timeout=4)
                answers += [took, get(page, "/metrics", timeout=4)[1]]
                time.sleep(0.3)
            polls_while_frozen = runner.polls - before
            stuck = systemd.stalled(agent, 3.0)  # what the watchdog would see
        finally:
            armed.clear()
            agent.queue.set_listener(agent.forwarder.notify)
            unfreeze(ext4)
            thawed_at = time.time()
        assert not stuck, "systemd's watchdog would take the agent for hung and kill it"
        assert max(answers) < 2.0, f"the status page took {max(answers):.1f} s to answer"
        assert json.loads(body)["queue"]["pending"] > 0, "it shows what waits in memory"
        assert polls_while_frozen > 6.0 / 0.02 / 3, "polling went on"
        agent.scheduler.stop()
        agent.queue.flush()
        last = agent.queue.stats().next_seq - 1
        wait_until(lambda: collector.seqs() >= set(range(1, last + 1)), timeout=30,
                   what="everything polled to be delivered")
        st = agent.queue.stats()
        assert (st.dropped, st.pending, st.evicted) == (0, 0, 0)
    finally:
        agent.stop()
    by_seq = {r["seq"]: r["ts"] for r in collector.readings() if r["metric"] == "turbidity"}
    ts = [by_seq[s] for s in sorted(by_seq)]
    assert ts == sorted(ts), "written when the disk came back, in poll order"
    around = [(a, b) for a, b in itertools.pairwise(ts)
              if frozen_at * 1000 - 500 <= a <= thawed_at * 1000]
    gap = max(b - a for a, b in around)
    assert gap < 2_500, f"no poll for {gap} ms while the disk was frozen"


def test_sigterm_on_a_frozen_disk_stops_in_bounded_time_and_counts_what_it_held(
        tmp_path: Path, ext4: Path, plc: ModbusSimulator, broker: LocalBroker,
        collector: Collector) -> None:
    db = ext4 / "queue.db"
    cfg = config(tmp_path, broker.port, plc, db)
    proc = subprocess.Popen([*EDGE_AGENT, "run", "-c", str(cfg)], stderr=subprocess.PIPE,
                            text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr or ()), daemon=True)
    reader.start()
    try:
        wait_until(lambda: next_seq_in(db) > 20, timeout=20, what="readings committed")
        freeze(ext4)
        try:
            time.sleep(3.0)  # polls go on into memory
            proc.send_signal(signal.SIGTERM)
            stopped = wait_until(lambda: [e for e in log_lines("".join(lines))
                                          if e["event"] == "agent stopped"], timeout=30,
                                 what="the stop to finish while the disk is frozen")
        finally:
            unfreeze(ext4)  # (the process can only end once its stuck write returns)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(5)
    err = "".join(lines)
    assert "Traceback" not in err
    (final,) = stopped
    assert final["dropped"] > 50 and final["pending"] == 0, "what was in memory is counted"
    drops = [e for e in log_lines(err) if e["event"] == "queue readings dropped"]
    assert drops and "not responding" in drops[-1]["cause"]
    assert sum(e["count"] for e in drops) == final["dropped"]


def test_a_removed_wal_then_kill_9_is_a_counted_loss_and_seqs_go_on(
        tmp_path: Path, plc: ModbusSimulator) -> None:
    db, page = tmp_path / "queue.db", free_port()
    cfg = config(tmp_path, free_port(), plc, db, page)  # no broker there: all stays queued
    first = subprocess.Popen([*EDGE_AGENT, "run", "-c", str(cfg)], stderr=subprocess.DEVNULL)
    wait_until(lambda: next_seq_in(db) > 50, timeout=20, what="a first run's readings")
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    kept = next_seq_in(db)  # closed cleanly: the file holds seqs below `kept`
    second = subprocess.Popen([*EDGE_AGENT, "run", "-c", str(cfg)], stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: next_seq_in(db) > kept + 50, timeout=20, what="the second run")
        Path(f"{db}-wal").unlink()  # someone removes the WAL while it runs
        time.sleep(1.0)  # the agent goes on committing, into the removed WAL
    finally:
        second.send_signal(signal.SIGKILL)
        second.wait()
    third = subprocess.Popen([*EDGE_AGENT, "run", "-c", str(cfg)], stderr=subprocess.PIPE,
                             text=True)
    try:
        text = wait_until(lambda: answer(page, "/metrics"), timeout=20, what="the third run")
        health = json.loads(wait_until(lambda: answer(page, "/status.json")))["queue"]
        begun = next_seq_in(db)
        wait_until(lambda: next_seq_in(db) > begun + 10, what="the third run to poll")
        third.send_signal(signal.SIGTERM)
        _, err = third.communicate(timeout=30)
    finally:
        if third.poll() is None:
            third.kill()
    assert third.returncode == 0, err
    (gone,) = [e for e in log_lines(err)
               if e["event"] == "queue file went back: committed readings lost"]
    assert gone["seqs_from"] == kept and gone["seqs_to"] > kept + 50
    assert gone["at_most"] == gone["seqs_to"] - kept + 1, "nothing was delivered: all of them"
    con = sqlite3.connect(db)
    new = con.execute("SELECT min(seq) FROM readings WHERE seq >= ?", (kept,)).fetchone()[0]
    lost = con.execute("SELECT value FROM meta WHERE key = 'lost'").fetchone()[0]
    con.close()
    assert new > gone["seqs_to"], "seqs continue above every seq issued"
    assert lost == gone["at_most"] == health["lost"] == metric(text, "edge_agent_queue_lost_total")
    shown = subprocess.run([*EDGE_AGENT, "queue", "-c", str(cfg)], capture_output=True,
                           text=True, check=True).stdout
    assert f"lost       {lost:,}" in shown
