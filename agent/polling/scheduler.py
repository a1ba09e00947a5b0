"""Polling: one APScheduler job per device, run on the worker that owns its bus.

`Scheduler` runs the runners (`agent.polling.runner`) at their own intervals; a job never
overlaps itself (`max_instances=1`, `coalesce`), so a slow device skips beats instead of piling
up polls. Devices on a shared bus run on that bus's own single worker thread, so their requests
never overlap and a dead unit costs the others at most its own timeout; different buses and
private-connection devices run in parallel on the common pool.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from agent.polling.runner import DeviceRunner
from agent.transport.ports import Port, close_all


class Scheduler:
    """Runs each runner's `poll_once` at its interval on a thread pool."""

    def __init__(self, runners: Sequence[DeviceRunner],
                 ports: Mapping[str, Port] | None = None) -> None:
        self.runners = list(runners)
        self.ports = dict(ports or {})
        self.buses = sorted({b for r in self.runners if (b := r.driver.bus) is not None})
        private = sum(r.driver.bus is None for r in self.runners)
        self._pool, self._capacity = "default", max(4, private + 1)
        executors = {"default": ThreadPoolExecutor(self._capacity)}
        executors |= {f"bus:{b}": ThreadPoolExecutor(1) for b in self.buses}  # the bus worker
        self._executors = set(executors)
        self._sched = BackgroundScheduler(
            executors=executors,
            job_defaults={"coalesce": True, "max_instances": 1},
            timezone="UTC",
        )

    def start(self) -> None:
        for r in self.runners:
            self._schedule(r, "default" if r.driver.bus is None else f"bus:{r.driver.bus}")
        self._sched.start()

    def _schedule(self, r: DeviceRunner, executor: str) -> None:
        self._sched.add_job(
            r.poll_once, IntervalTrigger(seconds=r.interval), id=r.name, name=r.name,
            next_run_time=datetime.now(UTC), misfire_grace_time=max(1, round(r.interval)),
            executor=executor,
        )

    def add(self, r: DeviceRunner) -> None:
        """Start polling one more runner (a reload); its first beat is now."""
        if r.driver.bus is not None:
            executor = f"bus:{r.driver.bus}"
            if executor not in self._executors:  # a bus that did not exist at start
                self._sched.add_executor(ThreadPoolExecutor(1), executor)
                self._executors.add(executor)
                self.buses = sorted({*self.buses, r.driver.bus})
        else:
            if sum(x.driver.bus is None for x in self.runners) + 1 > self._capacity:
                self._pool = f"pool:{len(self._executors)}"  # more room for private devices
                self._sched.add_executor(ThreadPoolExecutor(8), self._pool)
                self._executors.add(self._pool)
                self._capacity += 8
            executor = self._pool
        self.runners.append(r)
        self._schedule(r, executor)

    def remove(self, name: str) -> DeviceRunner | None:
        """Stop polling one runner (a reload): no new beats, the one in progress finishes and
        is queued, then its driver is closed. Shared ports stay open."""
        r = next((x for x in self.runners if x.name == name), None)
        if r is None:
            return None
        with contextlib.suppress(JobLookupError):
            self._sched.remove_job(name)
        r.close()
        self.runners.remove(r)
        return r

    def stop(self) -> None:
        """Stop scheduling; wait for polls in progress to finish and be queued."""
        if self._sched.running:
            self._sched.shutdown(wait=True)
        for r in self.runners:
            r.close()
        close_all(self.ports)

