"""What the benchmark scenarios share: filling a queue, the agent as a real process, its CPU and
memory read from /proc, the counting subscriber, and waiting."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from agent.core.clock import SYSTEM
from agent.core.model import Reading, now_ms
from agent.queue import Queue, schema
from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]
EDGE_AGENT = str(Path(sys.executable).parent / "edge-agent")
TICK = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """A scenario could not run (a peer did not start, the agent made no progress)."""


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.05) -> Any:
    """Poll `predicate` until truthy; BenchError after `timeout` s."""
    return wait_until(predicate, timeout, interval, what, error=BenchError)


def fill(db: Path, n: int, devices: int = 4) -> float:
    """Queue `n` readings (as if polled a day ago while offline, by a gateway whose clock is
    synchronized: this machine's kernel may say it is not); returns seconds taken."""
    SYSTEM.trusted = True
    q = Queue(db, synchronous="normal", check_every=3600)
    t0 = time.perf_counter()
    ts = now_ms() - 86_400_000
    per = 10_000
    for start in range(0, n, per):
        q.put([Reading(f"plc-{i % devices}", f"m{i % 7}", (start + i) * 0.25, "unit", ts + i)
               for i in range(min(per, n - start))])
    q.close()
    return time.perf_counter() - t0


def trusted(config: Path) -> None:
    """A gateway whose clock is synchronized (NTP): readings go without clock labels."""
    cfg = json.loads(config.read_text())
    cfg["gateway"]["clock"] = "trusted"
    config.write_text(json.dumps(cfg, indent=2))


def depth(db: Path) -> int:
    """Readings queued, read beside the running agent (0 before it created the queue)."""
    if not db.exists():
        return 0
    con = sqlite3.connect(db, timeout=10)
    try:
        row = con.execute(schema.META_VALUE, (schema.DEPTH,)).fetchone()
        return int(row[0]) if row else 0
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far: all its threads, and the children it
    started and waited for (a helper command it runs is its cost too)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICK


def memory_kb(pid: int, key: str = "VmRSS") -> int:
    """`VmRSS` (resident now) or `VmHWM` (peak resident) of a process, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise BenchError(f"no {key} for pid {pid}")


def percentile(values: Sequence[float], p: float) -> float:
    """The `p`-th percentile (0..100) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return float(ordered[rank - 1])


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min and max of repeated measurements of one figure."""
    ordered = sorted(values)
    return {"median": ordered[len(ordered) // 2], "min": ordered[0], "max": ordered[-1]}


class AgentProcess:
    """`edge-agent run -c CONFIG` as a child process, stopped by its pid (SIGTERM)."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen([EDGE_AGENT, "run", "-c", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


class Counter:
    """The counting subscriber (tests/bench/counter.py) as its own process, so that counting
    does not compete with the agent for its interpreter."""

    def __init__(self, port: int, workdir: Path, latency: bool = False,
                 exclude: Sequence[str] = ()) -> None:
        self.path = workdir / f"counter-{port}.json"
        args = [sys.executable, "-m", "tests.bench.counter", str(port), str(self.path)]
        if latency:
            args.append("--latency")
        args += [f"--exclude={d}" for d in exclude]
        self.proc = subprocess.Popen(args, cwd=ROOT)
        wait_for(lambda: self.state().get("ready"), 20, "the counter to subscribe")

    def state(self) -> dict[str, Any]:
        try:
            return dict(json.loads(self.path.read_text()))
        except (OSError, ValueError):
            return {}

    @property
    def readings(self) -> int:
        return int(self.state().get("readings", 0))

    def stop(self) -> dict[str, Any]:
        """Stop it; returns its final figures (with latencies, if it kept them)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(10)
        return self.state()
