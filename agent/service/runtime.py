"""Wires the agent together and owns its process life: start, signals, reload, clean stop.

config -> Queue -> DeviceRunners on the Scheduler -> Forwarder -> Publisher, each built once with
what it needs (the publisher first, so the forwarder can take it). SIGHUP reloads the config
(`agent.service.reload` plans it, `Agent.apply` carries it out: devices and buses change live,
the queue and uplink stay; an invalid config is logged and not applied). The main thread waits
for signals, writes the status file `edge-agent status` reads (`agent.service.status_file`) and
tells systemd how the agent is (`agent.service.systemd`: READY, STATUS, RELOADING, STOPPING, and
watchdog pings while it makes progress). Those readers, health and the status page see the
agent only through `agent.service.view`. Stopping runs the chain backwards: polls in progress
finish and are queued, in-flight messages get a short grace for their PUBACKs (what is not
acknowledged stays queued for next time), `offline` is published, and the database is closed.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from agent import __version__
from agent.config.load import AgentConfig, load, load_config
from agent.core import log
from agent.core.clock import SYSTEM
from agent.core.errors import ConfigError, PublishError, QueueError
from agent.polling.runner import DeviceRunner
from agent.polling.scheduler import Scheduler
from agent.queue.store import Limits, Queue, QueueStats
from agent.service.health import HealthReporter
from agent.service.reload import PendingLoad, Plan, plan, report, restart_sections
from agent.service.status_file import StatusFile, path_for
from agent.service.status_page import StatusPage
from agent.service.systemd import Service
from agent.service.view import DeviceState, UplinkState
from agent.transport.ports import Port, open_buses, open_port
from agent.uplink.forwarder import Forwarder
from agent.uplink.publisher import Publisher
from drivers import registry

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2
FORWARDER_STOP_WAIT = 5.0
"""Seconds a stop waits for the forwarder (its 2 s grace for PUBACKs, and a read the disk may
hold up) before it goes on: the queue's close must still count what is in memory in time."""


class Agent:
    """One running agent built from a validated config.

    It is also the read-only `agent.service.view.AgentView` that health, metrics, systemd, the
    status file and the status page are given: they see only its view members (below `stop`).
    """

    def __init__(self, config: AgentConfig, config_file: str = "") -> None:
        self.config = config
        SYSTEM.trusted = config.gateway.clock == "trusted"
        gw, mq = config.gateway.id, config.mqtt
        qc = config.queue
        self.queue = Queue(qc.path, qc.synchronous,
                           Limits(qc.max_bytes, qc.max_age, qc.min_free))
        devices = [d for d in config.devices if d.enabled]
        self.publisher = Publisher(mq, gw, [d.name for d in devices])
        self.forwarder = Forwarder(self.queue, gw, mq, self.publisher,
                                   backlog_rate=qc.backlog_rate)
        self.queue.set_listener(self.forwarder.notify)
        # opened on first use; closed by the scheduler
        self.ports: dict[str, Port] = dict(open_buses(config.buses))
        self.runners = [DeviceRunner(registry.create(d, self.ports), self.queue) for d in devices]
        self.scheduler = Scheduler(self.runners, self.ports)
        self.ports = self.scheduler.ports  # one map of open buses, which a reload changes
        self.status_file = StatusFile(path_for(qc.path), config_file)
        self._log = log.get("agent")
        self._stopped = False
        self.started_at = time.monotonic()
        self.health = HealthReporter(self, self.publisher, config.mqtt.health_interval)
        self.status_page = StatusPage(self, config.status_page)  # serves only if enabled

    def start(self) -> None:
        self.publisher.start()
        self.forwarder.start()
        self.scheduler.start()
        self.health.start()
        self.status_page.start()  # logs, never raises, if it cannot listen
        stats = self.queue.stats()
        self._log.info("agent started", version=__version__, gateway=self.config.gateway.id,
                       devices=len(self.runners), queued=stats.depth, queue=str(self.queue.path))
        self.status_file.write(self)

    def reload(self, config_file: str) -> bool:
        """Load `config_file` again and apply it live; if it is invalid, log every error and
        keep running the config in use. True if applied."""
        started = time.monotonic()
        self._log.info("config reload requested", config=config_file)
        try:
            return self.reloaded(load(config_file).config, started)
        except ConfigError as exc:
            return self.reloaded(exc, started)

    def reloaded(self, new: AgentConfig | ConfigError, started: float) -> bool:
        """Apply a config read for a reload (`reload.PendingLoad`), or log why it is refused
        and keep running the config in use. True if applied."""
        if isinstance(new, ConfigError):
            for issue in new.issues:
                self._log.error("config error", at=f"{issue.file}:{issue.line}:{issue.col}",
                                error=issue.message)
            self._log.error("config reload refused: still running the previous config",
                            errors=len(new.issues))
            self.status_file.reloaded(False, [str(i) for i in new.issues])
            return False
        p = plan(self.config, new)
        self.apply(p, new)
        report(p, time.monotonic() - started)
        self.status_file.reloaded(True, restart_needed=list(p.restart_keys))
        self.status_file.write(self)
        return True

    def apply(self, p: Plan, new: AgentConfig) -> None:
        """Run `new` as `p` (`reload.plan(self.config, new)`) says, minus what needs a restart:
        stop removed and changed devices, reopen changed buses, start added and changed
        devices, tell the broker the device list; keep the restart-only sections as running."""
        sched, ports = self.scheduler, self.scheduler.ports  # the one map: self.ports
        for name in p.stop:
            sched.remove(name)
        for name in p.buses_closed:
            port = ports.pop(name)
            with port.lock:
                port.close()
        for bus in p.buses_opened:
            ports[bus.name] = open_port(bus)
        for cfg in p.start:
            try:
                sched.add(DeviceRunner(registry.create(cfg, ports), self.queue))
            except Exception as exc:  # a driver that cannot even be built must not stop the rest
                log.get("agent", cfg.name).error("device not started", error=repr(exc))
        by_name = {r.name: r for r in sched.runners}
        self.runners = [by_name[n] for n in p.order if n in by_name]
        self.publisher.set_devices([r.name for r in self.runners])
        keep = {s: getattr(self.config, s) for s in restart_sections()}
        if p.clock_changed:
            keep["gateway"] = keep["gateway"].model_copy(update={"clock": new.gateway.clock})
            SYSTEM.trusted = new.gateway.clock == "trusted"
        self.config = new.model_copy(update=keep)
        if p.log_changed:
            log.setup(new.log.level, new.log.format)

    def stop(self) -> None:
        """Stop everything, in reverse order; idempotent. The queue's close commits what is
        left (and the deletions of what the broker acknowledged last), or counts what it cannot
        write as dropped and says why; it never raises, so a stop on a broken disk still ends
        with the final line, which carries the counts the file may not have taken."""
        if self._stopped:
            return
        self._stopped = True
        self.status_page.stop()
        self.health.stop()
        self.scheduler.stop()
        # (on its own thread: a forwarder reading a backlog from a frozen disk waits for it)
        forwarder = threading.Thread(target=self.forwarder.stop, kwargs={"grace": 2.0},
                                     name="forwarder-stop", daemon=True)
        forwarder.start()
        forwarder.join(FORWARDER_STOP_WAIT)
        if forwarder.is_alive():
            self._log.warning("forwarder still waiting for the queue's disk; stopping without it",
                              waited_s=FORWARDER_STOP_WAIT)
        self.health.final()  # sent before `offline`, which publisher.stop waits for
        self.publisher.stop()
        self.queue.close()
        stats = self.queue.stats()  # as closed
        self.status_file.write(self, "stopped")
        self._log.info("agent stopped", published=self.forwarder.published,
                       left_queued=stats.depth, pending=stats.pending, dropped=stats.dropped,
                       lost=stats.lost)

    # agent.service.view.AgentView: what the readers may see, read when they ask
    @property
    def gateway(self) -> str:
        return self.config.gateway.id

    @property
    def site(self) -> str | None:
        return self.config.gateway.site

    @property
    def mqtt_host(self) -> str:
        return self.config.mqtt.host

    @property
    def mqtt_port(self) -> int:
        return self.config.mqtt.port

    @property
    def topic_prefix(self) -> str:
        return self.config.mqtt.topic_prefix

    @property
    def reconnect_min(self) -> float:
        return self.config.mqtt.reconnect_min

    @property
    def queue_path(self) -> Path:
        return self.queue.path

    def queue_stats(self) -> QueueStats:
        return self.queue.stats()

    def uplink(self) -> UplinkState:
        pub, fwd = self.publisher, self.forwarder
        return UplinkState(connected=pub.connected.is_set(), alive=pub.alive,
                           since_ms=pub.connected_since_ms, last_error=pub.last_error,
                           reconnects=pub.reconnects, attempts=pub.attempts,
                           last_ack_ms=fwd.last_ack_ms, published=fwd.published,
                           loop_at=fwd.loop_at, delivery=fwd.delivery)

    def publish_stats(self) -> dict[str, Any]:
        return self.forwarder.stats.counters()

    def devices(self) -> tuple[DeviceState, ...]:
        return tuple(DeviceState(
            name=r.name, driver=r.driver.config.driver, interval=r.interval,
            timeout=float(getattr(r.driver.config, "timeout", None) or 0), state=r.state,
            polls=r.polls, last_ok_ms=r.last_ok_ms, last_error=r.last_error,
            last_error_ms=r.last_error_ms, busy_since=r.busy_since, beat_at=r.beat_at,
            recent=r.recent) for r in list(self.runners))


def run(config_path: str, stop: threading.Event | None = None,
        reload: threading.Event | None = None) -> int:
    """`edge-agent run`: load, start, wait for SIGINT/SIGTERM (or `stop`), stop cleanly.

    SIGHUP (or `reload`) reads the config again on its own thread (`reload.PendingLoad`), so the
    main thread keeps answering signals and the watchdog: a stop is never held up by a reload,
    and a read that takes longer than `RELOAD_DEADLINE` is refused."""
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(f"edge-agent: invalid config, not starting:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    log.setup(config.log.level, config.log.format)
    stop = stop or threading.Event()
    reload = reload or threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.get("agent").info("stop requested", signal=signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGHUP, lambda *_: reload.set())
    if stop.is_set():  # asked to stop while starting up: nothing was started yet
        log.get("agent").info("stop requested before start")
        return EXIT_OK
    try:
        agent = Agent(config, config_path)
    except QueueError as exc:
        log.get("queue").error("cannot start", error=str(exc))
        return EXIT_FAILURE
    except PublishError as exc:  # TLS files or the password unreadable now
        log.get("uplink").error("cannot start", error=str(exc))
        return EXIT_FAILURE
    agent.start()
    service = Service.from_env()  # systemd: READY, STATUS, RELOADING, STOPPING, watchdog
    service.ready(agent)
    pending: PendingLoad | None = None
    while not stop.wait(0.2):
        if reload.is_set() and pending is None:
            reload.clear()
            service.reloading()
            log.get("agent").info("config reload requested", config=config_path)
            pending = PendingLoad(config_path)
        if pending is not None and (new := pending.result()) is not None:
            ok = agent.reloaded(new, pending.started)
            pending = None
            service.ready(agent, "" if ok else "reload refused, running the previous config")
        agent.status_file.write_if_due(agent)
        service.tick(agent)
    service.stopping()
    agent.stop()
    return EXIT_OK
