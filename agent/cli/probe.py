"""The technician's commands: `edge-agent probe` (one device, once, every point's raw registers
and decoded value, or its read plan; text sensors in `agent.cli.probe_line`) and `edge-agent scan`
(which unit ids answer on a serial line).

This module owns what those commands print and their exit codes (0 the device answered / some
unit answered, 1 not, never a traceback). It uses the same config loader, ports and drivers as
the agent, so what `probe` shows is what `run` will read. It is meant to be run while the agent
is stopped (both would want the serial port).
"""

from __future__ import annotations

import difflib
import sys
import time
from typing import Any, TextIO

import structlog

from agent.cli import probe_line
from agent.config.load import load_config
from agent.core import log
from agent.core.errors import ConfigError, DeviceTimeout, DriverError
from agent.transport.ports import BusConfig, Port, open_buses, open_port
from drivers.modbus.ascii import ModbusAscii, ModbusAsciiConfig
from drivers.modbus.driver import GATEWAY_CODES, ModbusDriver, ModbusPoint, point_value
from drivers.modbus.frame import FrameError, Framing, ModbusExceptionReply, UnexpectedReply
from drivers.modbus.rtu import ModbusRtu, ModbusRtuConfig
from drivers.registry import create
from drivers.serial_line.driver import SerialLine

ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")


def _hex(data: Any, most: int = 1000) -> str:
    more = f" ... (+{len(data) - most})" if len(data) > most else ""
    if data and isinstance(data[0], bool):
        return " ".join("1" if b else "0" for b in data[:most]) + more
    return " ".join(f"{int(r):04X}" for r in data[:most]) + more


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def probe(config_path: str, device: str, *, plan: bool = False, orders: bool = False,
          out: TextIO | None = None) -> int:
    """Poll `device` once and print what each request and point got; or its plan."""
    out = out or sys.stdout
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    names = [d.name for d in config.devices]
    found = next((d for d in config.devices if d.name == device), None)
    if found is None:
        close = difflib.get_close_matches(device, names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        print(f"{config_path}: no device '{device}'{hint}; devices: {', '.join(names)}",
              file=sys.stderr)
        return 1
    saved = structlog.get_config()
    log.setup("warning", "console", stream=sys.stderr)  # the trace says what the log would
    ports = open_buses(config.buses)
    driver = create(found, ports)
    try:
        if isinstance(driver, SerialLine):
            if plan:
                probe_line.plan(driver, out)
                return 0
            return probe_line.probe(driver, out)
        if not isinstance(driver, ModbusDriver):
            print(f"{device}: probe shows Modbus and serial_line devices only", file=sys.stderr)
            return 1
        if plan:
            _print_plan(driver, out)
            return 0
        return _probe(driver, orders, out)
    finally:
        driver.close()
        for port in ports.values():
            port.close()
        structlog.configure(**saved)  # callers (tests, the agent) keep their logging


def _print_plan(driver: ModbusDriver, out: TextIO) -> None:
    points = driver.config.points
    print(f"{driver.config.name}: {len(points)} point(s) in {len(driver.plan)} request(s) "
          f"(max_gap {driver.config.max_gap}, max {driver.config.max_registers_per_read} "
          f"registers / {driver.config.max_bits_per_read} bits per read)", file=out)
    for r in driver.plan:
        print(f"  {r.describe():<28} {', '.join(points[i].name for i in r.points)}", file=out)


def _probe(driver: ModbusDriver, orders: bool, out: TextIO) -> int:
    c = driver.config
    driver.trace = []
    started = time.monotonic()
    try:
        readings = driver.poll()
    except DriverError as exc:
        for t in driver.trace:
            print(f"  {t.request.describe():<28} {t.error or _hex(t.data, 8)}", file=out)
        print(f"{c.name}: no answer: {exc} ({exc.quality})", file=out)
        return 1
    took = time.monotonic() - started
    print(f"{c.name}: unit {driver.unit} on {driver.port.name}: {len(driver.trace)} "
          f"request(s) in {took * 1000:.0f} ms", file=out)
    for t in driver.trace:
        print(f"  {t.request.describe():<28} {t.error or _hex(t.data, 8)}", file=out)
    raw = _raw_by_point(driver)
    for p, r in zip(c.points, readings, strict=True):
        regs = raw.get(p.name)
        value = _show(r.value) if r.quality == "good" else f"- ({r.quality})"
        unit = f" {p.unit}" if p.unit and r.quality == "good" else ""
        print(f"  {p.name:<20} {p.table:<8} {p.address:>5}  {_hex(regs) if regs else '':<20} "
              f"{value}{unit}", file=out)
        if orders and regs and p.type in ("int32", "uint32", "int64", "uint64", "float32",
                                          "float64"):
            print("      " + "  ".join(f"{o}: {_alt(p, regs, o)}" for o in ORDERS), file=out)
    return 0


def _alt(p: ModbusPoint, regs: list[int], order: str) -> str:
    value, quality = point_value(p.model_copy(update={"byte_order": order}), regs, order)
    return _show(value) if quality == "good" else quality


def _raw_by_point(driver: ModbusDriver) -> dict[str, list[int]]:
    """Each point's own registers (or bits) out of the successful requests of the last poll."""
    out: dict[str, list[int]] = {}
    for t in driver.trace or []:
        if t.data is not None:
            for i, data in driver.points_in(t.request, t.data):
                out[driver.config.points[i].name] = [int(v) for v in data]
    return out


def parse_units(text: str) -> list[int]:
    """'1-10,15' -> [1..10, 15]; raises ValueError outside 1..247."""
    units: list[int] = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        units += range(int(first), int(last or first) + 1)
    if not units or min(units) < 1 or max(units) > 247:
        raise ValueError(f"units must be within 1..247: {text!r}")
    return units


def unit_driver(line: Port, framing: Framing, unit: int) -> ModbusDriver:
    """A throwaway driver for `unit` on the scanned line that reads holding register 0."""
    device = {"name": "scan", "bus": "scan", "unit": unit,
              "points": [{"name": "holding_0", "table": "holding", "address": 0}]}
    if framing == "ascii":
        return ModbusAscii(ModbusAsciiConfig.model_validate(
            {**device, "driver": "modbus_ascii"}), {"scan": line})
    return ModbusRtu(ModbusRtuConfig.model_validate({**device, "driver": "modbus_rtu"}),
                     {"scan": line})


def ask(driver: ModbusDriver) -> str | None:
    """What the driver's unit says to its one read (holding 0), or None if it stays silent."""
    request = driver.plan[0]
    try:
        value = driver.read_once(request)[0]
    except DeviceTimeout:
        return None
    except ModbusExceptionReply as exc:
        if exc.code in GATEWAY_CODES:
            return None  # a gateway saying nobody is there
        return f"answers with {exc}"
    except UnexpectedReply as exc:
        return f"odd reply ({exc})"
    except FrameError as exc:
        return f"garbled reply ({exc}): check baud rate and parity"
    return f"{request.table} {request.address} = {value}"


def scan(port: str, baudrate: int, units: list[int], *, parity: str = "N", stopbits: int = 1,
         bytesize: int = 8, timeout: float = 0.2, framing: Framing = "rtu",
         out: TextIO | None = None) -> int:
    """Ask each unit id once; print those that answer. Exit 0 if any did."""
    out = out or sys.stdout
    bus = BusConfig.model_validate({"name": "scan", "port": port, "baudrate": baudrate,
                                    "parity": parity, "stopbits": stopbits,
                                    "bytesize": bytesize, "timeout": timeout})
    line = open_port(bus)
    found: list[int] = []
    try:
        print(f"scanning {port} at {baudrate} {bytesize}{bus.parity[0].upper()}{stopbits} "
              f"({framing}), units {units[0]}..{units[-1]}, {timeout:g} s each", file=out)
        for unit in units:
            said = ask(unit_driver(line, framing, unit))
            if said is not None:
                found.append(unit)
                print(f"  unit {unit:>3}: {said}", file=out, flush=True)
    except DriverError as exc:
        print(f"scan: {exc}", file=sys.stderr)
        return 1
    finally:
        line.close()
    print(f"{len(found)} unit(s) answered: {', '.join(map(str, found)) or 'none'}", file=out)
    return 0 if found else 1

