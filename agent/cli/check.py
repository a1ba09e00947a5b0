"""`edge-agent check`: is this config right, and what will the agent do with it?

This module owns what `check` prints: every error as file:line:col (exit 1), or a summary a
technician can read against the installation (exit 0): the files read, gateway and broker, and
per device its driver, where it is wired, interval, points and Modbus requests per poll cycle
(after read planning), with each serial line's requests per second and an estimate of how busy
the line is (past about 70% polls start to slip). It runs before the service starts (systemd
ExecStartPre) and before every reload, and never touches a device.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from typing import TextIO

from agent.config.checks import short
from agent.config.load import AgentConfig, load
from agent.core.errors import ConfigError
from agent.transport.ports import BusConfig
from drivers.base import DeviceConfig
from drivers.modbus.driver import ModbusDeviceConfig
from drivers.modbus.plan import BIT_TABLES, Span, plan

BUSY_WARN = 0.7
"""Estimated share of a serial line's time spent on requests above which `check` warns."""
BYTES_PER_READING = 80
"""Disk a queued reading takes (measured: 77 bytes per reading in the queue file, index included),
for the warning when `min_free` leaves the queue less than `ROOM_WARN` s of readings."""
ROOM_WARN = 3600.0


@dataclass(frozen=True)
class DeviceLoad:
    name: str
    driver: str
    where: str
    interval: float
    points: int
    profile: str
    requests: int  # per poll cycle
    line_s: float  # estimated seconds of line time per cycle (serial buses only)


def _where(d: DeviceConfig) -> str:
    bus, unit = getattr(d, "bus", None), getattr(d, "unit", None)
    host, port = getattr(d, "host", None), getattr(d, "port", None)
    if bus is not None:
        return f"{bus}" + (f" unit {unit}" if unit is not None else "")
    if host is not None:
        return f"{host}:{port}" + (f" unit {unit}" if unit is not None else "")
    return "-"


def device_load(d: DeviceConfig, buses: dict[str, BusConfig]) -> DeviceLoad:
    """Requests per cycle and line time of one device, from its config alone."""
    points = getattr(d, "points", None) or []
    if isinstance(d, ModbusDeviceConfig):
        reqs = plan([Span(p.table, p.address, p.width) for p in d.points], d.max_gap,
                    d.max_registers_per_read, d.max_bits_per_read)
    else:
        reqs = []
    n = len(reqs) if reqs else (0 if getattr(d, "mode", None) == "stream" else 1)
    line_s = 0.0
    bus = buses.get(str(getattr(d, "bus", "")))
    if bus is not None and bus.host is None:  # time on the wire: request + reply + gaps
        bits = 1 + bus.bytesize + (0 if bus.parity in ("N", "none") else 1) + bus.stopbits
        for r in reqs:
            reply = 5 + (-(-r.count // 8) if r.table in BIT_TABLES else 2 * r.count)
            line_s += (8 + reply) * bits / bus.baudrate + 2 * bus.gap
    return DeviceLoad(d.name, d.driver, _where(d), d.interval, len(points), d.profile or "-", n,
                      line_s)


def _secs(s: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size and (s / size).is_integer():
            return f"{int(s / size)}{unit}"
    return f"{s * 1000:g}ms" if s < 1 else f"{s:g}s"


def summary(config: AgentConfig, files: tuple[str, ...], out: TextIO) -> None:
    c = config
    buses = {b.name: b for b in c.buses}
    active = [d for d in c.devices if d.enabled]
    loads = [device_load(d, buses) for d in active]
    extra = len(files) - 1
    folder = short(os.path.dirname(files[-1]), files[0])
    print(f"  files: {files[0]}" + (f" + {extra} in {folder}/" if extra else ""), file=out)
    print(f"  gateway {c.gateway.id}" + (f" (site {c.gateway.site})" if c.gateway.site else "")
          + f"; broker {c.mqtt.host}:{c.mqtt.port}, topics {c.mqtt.topic_prefix}/"
          f"{c.gateway.id}/...; queue {c.queue.path}", file=out)
    disabled = len(c.devices) - len(active)
    print(f"  {len(active)} device(s)" + (f" (+{disabled} disabled)" if disabled else "")
          + f", {sum(x.points for x in loads)} point(s), {len(c.buses)} bus(es), "
          f"{sum(x.requests for x in loads)} request(s) per cycle, "
          f"{sum(x.requests / x.interval for x in loads):.1f} request(s)/s", file=out)
    rows = [("DEVICE", "DRIVER", "WHERE", "EVERY", "POINTS", "REQUESTS", "PROFILE")] + [
        (x.name, x.driver, x.where, _secs(x.interval), str(x.points), str(x.requests), x.profile)
        for x in loads]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("    " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip(),
              file=out)
    for b in c.buses:
        on = [x for x in loads if x.where.split(" ")[0] == b.name]
        rate = sum(x.requests / x.interval for x in on)
        line = f"  bus {b.name} ({b.address}): {len(on)} device(s), {rate:.1f} request(s)/s"
        if b.host is None:
            busy = sum(x.line_s / x.interval for x in on)
            line += f", line busy ~{busy:.0%} at {b.baudrate} baud"
            if busy > BUSY_WARN:
                line += ("; warning: polls will slip - raise the baud rate or intervals, or "
                         "split the devices over two lines")
        print(line, file=out)
    warning = room_warning(c, sum(x.points / x.interval for x in loads))
    if warning:
        print(warning, file=out)


def _mb(n: float) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


def room_warning(config: AgentConfig, readings_per_s: float) -> str | None:
    """A warning when the disk under the queue, less `min_free`, holds under an hour of
    readings (the queue would evict nearly everything during an uplink outage)."""
    folder = os.path.dirname(os.path.abspath(config.queue.path))
    while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
        folder = os.path.dirname(folder)
    try:
        disk = shutil.disk_usage(folder)
    except OSError:
        return None
    q, per_hour = config.queue, readings_per_s * BYTES_PER_READING * ROOM_WARN
    if not q.min_free or readings_per_s <= 0:
        return None
    room = disk.free - q.min_free
    if room >= per_hour:
        return None
    lasts = "no time at all" if room <= 0 else \
        f"only ~{room / (readings_per_s * BYTES_PER_READING) / 60:.0f} min"
    return (f"  queue: warning: queue.min_free ({_mb(q.min_free)}) leaves room for {lasts} of "
            f"readings on this disk ({_mb(disk.free)} free of {_mb(disk.total)}; about "
            f"{_mb(per_hour)} of readings an hour): an uplink outage longer than that evicts "
            "readings; lower queue.min_free or give the queue a bigger disk")


def check(path: str, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Exit code 0 with a summary on `out`, or 1 with every error on `err`."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        loaded = load(path)
    except ConfigError as exc:
        print(exc, file=err)
        print(f"{path}: {len(exc.issues)} error(s)", file=err)
        return 1
    print(f"{path}: ok", file=out)
    summary(loaded.config, loaded.files, out)
    return 0
