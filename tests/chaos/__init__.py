"""Chaos and soak: the whole agent under faults, with every reading accounted for.

    .venv/bin/python -m tests.chaos --profile short            # ~1 min, every fault kind once
    .venv/bin/python -m tests.chaos --profile long             # >= 30 min and >= 100 faults
    .venv/bin/python -m tests.chaos --profile long --seed 42   # replay a printed seed

Needs root (the disk-full fault mounts a small tmpfs) and mosquitto. The short profile also
runs in the test suite (tests/chaos/test_chaos.py). See README, "Reliability".
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from pathlib import Path

from tests.chaos.faults import LONG, SHORT, Fault, Profile, Schedule, poll
from tests.chaos.ledger import Ledger, account, queue_state
from tests.chaos.world import World
from tests.peers.disk import mount_tmpfs, unmount

PROFILES = {"short": SHORT, "long": LONG}


def drain(world: World, timeout: float = 120.0) -> None:
    """Everything committed so far reaches the subscriber (or was counted evicted)."""
    target = world.next_seq()

    def done() -> bool:
        _, _, evicted, _ = queue_state(world.queue_db)
        missing = set(range(1, target)) - world.collector.seqs()
        return len(missing) <= evicted
    poll(done, timeout, "the backlog to drain")


def run(profile: Profile, seed: int, workdir: Path,
        log: Callable[[str], None] = print) -> Ledger:
    """Build the world, run the schedule, drain, stop the agent, and return the ledger."""
    log(f"chaos seed {seed} (replay: .venv/bin/python -m tests.chaos --profile {profile.name}"
        f" --seed {seed})")
    rng = random.Random(seed)
    disk = workdir / "disk"
    mount_tmpfs(disk)
    began = time.monotonic()
    world: World | None = None
    try:
        world = World(workdir, disk)
        world.start_agent()
        schedule = Schedule(world, disk, profile, rng, log=log)
        start = Fault("start", time.monotonic(), ended=time.monotonic())
        schedule.recover(start, timeout=60)
        if start.recovered is None:
            raise RuntimeError(f"the agent never delivered from every device: {world.log}")
        schedule.run()
        drain(world)
        rc = world.stop_agent()
        if rc != 0:
            log(f"agent exited {rc} on SIGTERM")
        last, queued, evicted, _ = queue_state(world.queue_db)
        w = world
        with contextlib.suppress(Exception):  # PUBACKed just before the stop: on their way
            poll(lambda: len(set(range(1, last + 1)) - w.collector.seqs() - queued) <= evicted,
                 10, "the last acknowledged messages")
        ledger = account(world, schedule.faults, seed, profile.name, time.monotonic() - began)
        if rc != 0:
            ledger.not_recovered.append(f"agent exit code {rc} on SIGTERM")
        if world.collector.invalid:
            ledger.not_recovered.append(f"schema violations: {world.collector.invalid[:3]}")
        return ledger
    finally:
        if world is not None:
            world.close()
        unmount(disk)
