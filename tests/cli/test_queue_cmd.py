"""`edge-agent queue` and `edge-agent queue export`, run as a technician would."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from agent.core.model import Reading, now_ms
from agent.queue import Queue
from tests.support import EDGE_AGENT, modbus_device, write_config


def _setup(tmp_path: Path) -> tuple[Path, Queue]:
    cfg = write_config(tmp_path / "agent.yaml", broker_port=1883,
                       devices=[modbus_device("plc", 5020)])
    q = Queue(tmp_path / "queue.db")
    old = now_ms() - 3 * 3600_000
    q.put([Reading("pump-a", "flow", 1.5, "m3/h", old), Reading("pump-a", "on", True, None, old)])
    q.put([Reading("pump-b", "flow", None, "m3/h", now_ms(), "timeout")])
    q.put([Reading("pump-a", "flow", 2.5, "m3/h", now_ms())])
    return cfg, q


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGE_AGENT, *args], capture_output=True, text=True, timeout=30)


def test_status_shows_depth_age_and_per_device_backlog(tmp_path: Path) -> None:
    cfg, q = _setup(tmp_path)
    proc = _run("queue", "-c", str(cfg))
    assert proc.returncode == 0, proc.stderr
    assert "4 waiting" in proc.stdout
    assert "3h 0m ago" in proc.stdout or "2h 59m ago" in proc.stdout
    assert "next seq   5" in proc.stdout
    lines = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()
             if line.startswith("pump-")}
    assert lines == {"pump-a": "3", "pump-b": "1"}
    q.close()


def test_status_before_the_agent_ever_ran(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "agent.yaml", broker_port=1883,
                       devices=[modbus_device("plc", 5020)])
    proc = _run("queue", "-c", str(cfg))
    assert proc.returncode == 0 and "not created yet" in proc.stdout
    assert not (tmp_path / "queue.db").exists(), "looking must not create the queue"


def test_export_streams_jsonl_and_keeps_the_queue(tmp_path: Path) -> None:
    cfg, q = _setup(tmp_path)
    proc = _run("queue", "export", "-c", str(cfg))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [x["seq"] for x in lines] == [1, 2, 3, 4]
    assert lines[1] == {"gateway": "test-gw", "device": "pump-a", "seq": 2, "ts": lines[1]["ts"],
                        "metric": "on", "value": True, "unit": None, "quality": "good"}
    assert lines[2]["value"] is None and lines[2]["quality"] == "timeout"
    assert "exported 4 readings (still queued)" in proc.stderr
    assert q.stats().depth == 4


def test_export_filters_and_deletes_exactly_what_it_wrote(tmp_path: Path) -> None:
    cfg, q = _setup(tmp_path)
    out = tmp_path / "usb-stick.jsonl"
    with out.open("w") as f:
        proc = subprocess.run([*EDGE_AGENT, "queue", "export", "-c", str(cfg), "--since", "1h",
                               "--device", "pump-a", "--delete"], stdout=f,
                              stderr=subprocess.PIPE, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    exported = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(x["seq"], x["value"]) for x in exported] == [(4, 2.5)]
    assert [r.seq for r in q.peek(0, 100)] == [1, 2, 3]
    assert q.stats().depth == 3


def test_export_rejects_a_bad_since(tmp_path: Path) -> None:
    cfg, _ = _setup(tmp_path)
    proc = _run("queue", "export", "-c", str(cfg), "--since", "yesterday-ish")
    assert proc.returncode == 1
    assert "--since 'yesterday-ish'" in proc.stderr and "Traceback" not in proc.stderr
