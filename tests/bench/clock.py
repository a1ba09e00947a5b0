"""The `clock` scenario: polls through wall-clock steps (NTP setting a Pi's clock after boot).

Five Modbus TCP devices at 1 s (real drivers against a pymodbus server in a child process, real
runners, a real queue file, the real scheduler), plus one `align: true` device at 1 s, for
~20 s (`--quick`: ~9 s). A third of the way in the wall clock steps forward 7 days, two thirds
in it steps back 60 s, both through the seam (`agent.core.clock.ManualClock` for the readings'
stamps, the scheduler's `wall=`): the machine's clock is never touched. Reported: the worst gap
between two polls of one device as a ratio of the interval (target: at most 1.1), the shortest
(a burst would be far below 1; wake-up jitter alone is about 0.99), polls per device, the
re-plans of the aligned device (one per step) and the CPU seconds of this process (the agent's
side only).
Under APScheduler 3 the step back stopped every device for 60 s and the step forward cost 10 s
of CPU and 57 MB walking 604,800 missed runs per device (NOTES.md).
"""

from __future__ import annotations

import tempfile
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

from agent.core.clock import ManualClock, use
from agent.core.model import now_ms
from agent.polling.runner import DeviceRunner
from agent.polling.scheduler import Scheduler
from agent.queue.store import Queue
from drivers import registry
from tests.bench.throughput import ServerProcess
from tests.support import modbus_device

DEVICES, INTERVAL = 5, 1.0
STEPS_MS = (7 * 86_400_000, -60_000)
TARGET_GAP = 1.1


def _runner(name: str, port: int, queue: Queue, starts: list[float],
            align: bool = False) -> DeviceRunner:
    cfg = modbus_device(name, port, interval=f"{INTERVAL:g}s") | {"align": align}
    driver = registry.create(registry.CONFIG_MODELS["modbus_tcp"].model_validate(cfg))
    poll = driver.poll

    def timed() -> Any:  # notes when each poll starts (monotonic), then polls
        starts.append(time.monotonic())
        return poll()

    driver.poll = timed  # type: ignore[method-assign]
    return DeviceRunner(driver, queue)


def worst_gap(starts: list[float]) -> float:
    return max((b - a for a, b in pairwise(starts)), default=float("inf"))


def shortest_gap(starts: list[float]) -> float:
    return min((b - a for a, b in pairwise(starts)), default=0.0)


def clock(quick: bool) -> dict[str, Any]:
    seconds = 9.0 if quick else 20.0
    wall = ManualClock(now_ms(), synced=True)
    with ServerProcess() as port, tempfile.TemporaryDirectory() as tmp:
        use(wall)  # the readings are stamped on the stepped clock too, as on a gateway
        queue = Queue(Path(tmp) / "q.db")
        starts: dict[str, list[float]] = {f"plc-{i}": [] for i in range(DEVICES)}
        starts["aligned"] = []
        runners = [_runner(n, port, queue, s, align=n == "aligned") for n, s in starts.items()]
        sched = Scheduler(runners, wall=lambda: wall.now_ms() / 1000)
        c0, t0 = time.process_time(), time.monotonic()
        try:
            sched.start()
            for k, step in enumerate(STEPS_MS, start=1):
                time.sleep(max(0.0, t0 + seconds * k / 3 - time.monotonic()))  # the window
                wall.set(wall.now_ms() + step)
            time.sleep(max(0.0, t0 + seconds - time.monotonic()))
        finally:
            sched.stop()
            cpu = time.process_time() - c0
            use(None)
            queue.close()
    plain = [s for n, s in starts.items() if n != "aligned"]
    polls = [len(s) for s in plain]
    return {
        "seconds": round(time.monotonic() - t0, 1), "devices": DEVICES, "interval_s": INTERVAL,
        "steps_s": [s / 1000 for s in STEPS_MS],
        "worst_gap_ratio": round(max(worst_gap(s) for s in plain) / INTERVAL, 3),
        "target_gap_ratio": TARGET_GAP,
        "shortest_gap_ratio": round(min(shortest_gap(s) for s in plain) / INTERVAL, 3),
        "polls_per_device": f"{min(polls)}-{max(polls)}",
        "aligned_worst_gap_ratio": round(worst_gap(starts["aligned"]) / INTERVAL, 3),
        "aligned_polls": len(starts["aligned"]), "aligned_replans": sched.replans,
        "cpu_s": round(cpu, 2),
    }
