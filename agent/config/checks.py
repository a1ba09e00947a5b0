"""Cross-checks: config mistakes no single key shows, found across devices, buses and files.

This module owns the checks that need the whole config (all files merged): device names unique
(across agent.yaml and devices.d), point names unique within a device, bus names unique, one
bus per physical port (and no device opening a port a bus owns), every `bus:` declared, one
device per unit id on a bus, a device that reads its bus all the time (a streaming sensor,
`claims_bus` on its model) alone on it, and no two points of a device reading the same
registers (a register may be read whole and as bits). They run on the raw data before
validation, so their findings are reported together with every other error; values they
cannot make sense of are left to validation to report.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from agent.config.words import suggest
from agent.config.yaml import Converter, Issue, Loc, Pos, dotted, file_of


def cross_checks(data: dict[str, Any], conv: Converter, main: str,
                 models: Mapping[str, type[BaseModel]]) -> list[Issue]:
    devices = data.get("devices")
    devs = [(i, d) for i, d in enumerate(devices if isinstance(devices, list) else [])
            if isinstance(d, dict)]
    return (_duplicates(devs, conv, main) + _buses(data, devs, conv, main)
            + _units(devs, conv, main, models) + _overlaps(devs, conv, main, models)
            + _claimed(devs, conv, main, models))


def _ref(pos: Pos, here: Pos, main: str) -> str:
    """How a message points at another place: "line 7", or "devices.d/a.yaml:7"."""
    there = file_of(pos, main)
    if there == file_of(here, main):
        return f"line {pos[0]}"
    return f"{short(there, main)}:{pos[0]}"


def short(file: str, main: str) -> str:
    """A file as messages name it: relative to the config's directory when inside it."""
    rel = os.path.relpath(os.path.abspath(file or "."), os.path.dirname(os.path.abspath(main)))
    return file if rel.startswith("..") else rel


def _pos(conv: Converter, loc: Loc) -> Pos:
    return conv.value_pos.get(loc) or conv.value_pos.get(loc[:2]) or (1, 1)


def _duplicates(devs: list[tuple[int, dict[str, Any]]], conv: Converter, main: str
                ) -> list[Issue]:
    """Device names unique in the config, point names unique within their device."""
    found: list[Issue] = []

    def check(items: list[tuple[Any, Any]], loc: Loc, what: str) -> None:
        seen: dict[str, Pos] = {}
        for i, item in items:
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str):
                continue
            pos = _pos(conv, (*loc, i, "name"))
            if name in seen:
                found.append((pos, f"{dotted((*loc, i, 'name'))}: duplicate {what} name "
                                   f"'{name}' (first used at {_ref(seen[name], pos, main)})"))
            seen.setdefault(name, pos)

    check(list(devs), ("devices",), "device")
    for i, dev in devs:
        points = dev.get("points")
        check(list(enumerate(points if isinstance(points, list) else [])),
              ("devices", i, "points"), "point")
    return found


def _buses(data: dict[str, Any], devs: list[tuple[int, dict[str, Any]]], conv: Converter,
           main: str) -> list[Issue]:
    """Bus names unique, one owner per physical port, every device's `bus` declared."""
    found: list[Issue] = []
    buses = data.get("buses")
    names: dict[str, int] = {}
    claimed: dict[str, str] = {}
    for i, bus in enumerate(buses if isinstance(buses, list) else []):
        if not isinstance(bus, dict):
            continue
        name, port, host = bus.get("name"), bus.get("port"), bus.get("host")
        if isinstance(name, str):
            if name in names:
                found.append((_pos(conv, ("buses", i, "name")), f"buses[{i}].name: duplicate "
                              f"bus name '{name}' (also buses[{names[name]}])"))
            names.setdefault(name, i)
        if isinstance(port, str | int) and not isinstance(port, bool):
            addr = (f"{host}:{port}" if isinstance(host, str) else
                    os.path.realpath(port) if isinstance(port, str) else str(port))
            if addr in claimed:
                found.append((_pos(conv, ("buses", i, "port")), f"buses[{i}].port: {addr} is "
                              f"already claimed by {claimed[addr]}; one bus per physical port "
                              "(put every device on that line on the same bus)"))
            claimed.setdefault(addr, f"buses[{i}]")
    for i, dev in devs:
        bus, port = dev.get("bus"), dev.get("port")
        if isinstance(bus, str) and bus not in names:
            known = list(names)
            found.append((_pos(conv, ("devices", i, "bus")), f"devices[{i}].bus: unknown bus "
                          f"'{bus}'; " + (f"declared: {', '.join(known)}{suggest(bus, known)}"
                                          if known else "declare it under `buses:`")))
        if isinstance(port, str) and "host" not in dev:  # a device with its own serial port
            addr = os.path.realpath(port)
            if addr in claimed:
                found.append((_pos(conv, ("devices", i, "port")), f"devices[{i}].port: {addr} "
                              f"is already claimed by {claimed[addr]}; one owner per port"))
            claimed.setdefault(addr, f"devices[{i}]")
    return found


def _enabled(dev: dict[str, Any]) -> bool:
    return dev.get("enabled", True) is not False


def _units(devs: list[tuple[int, dict[str, Any]]], conv: Converter, main: str,
           models: Mapping[str, type[BaseModel]]) -> list[Issue]:
    """One enabled device per unit id on a bus: two would answer the same request."""
    found: list[Issue] = []
    seen: dict[tuple[str, int], tuple[int, str]] = {}
    for i, dev in devs:
        bus, model = dev.get("bus"), models.get(str(dev.get("driver")))
        if not isinstance(bus, str) or model is None or "unit" not in model.model_fields:
            continue
        unit = dev.get("unit", model.model_fields["unit"].default)
        if not isinstance(unit, int) or isinstance(unit, bool) or not _enabled(dev):
            continue
        pos = _pos(conv, ("devices", i, "unit" if "unit" in dev else "bus"))
        if (bus, unit) in seen:
            j, name = seen[(bus, unit)]
            first = _ref(_pos(conv, ("devices", j)), pos, main)
            found.append((pos, f"devices[{i}].unit: unit {unit} on bus '{bus}' is already used "
                               f"by devices[{j}] '{name}' ({first}); every device on a bus "
                               "needs its own unit id"
                               + ("" if "unit" in dev else f" (unit defaults to {unit})")))
        seen.setdefault((bus, unit), (i, str(dev.get("name"))))
    return found


def _claimed(devs: list[tuple[int, dict[str, Any]]], conv: Converter, main: str,
             models: Mapping[str, type[BaseModel]]) -> list[Issue]:
    """A device whose model says it claims its bus (it reads it all the time) is alone on it."""
    found: list[Issue] = []
    for i, dev in devs:
        bus, claims = dev.get("bus"), getattr(models.get(str(dev.get("driver"))), "claims_bus",
                                              None)
        if not isinstance(bus, str) or not callable(claims) or not _enabled(dev) or not claims(
                dev):
            continue
        for j, other in devs:
            if j != i and other.get("bus") == bus and _enabled(other):
                pos = _pos(conv, ("devices", j, "bus"))
                found.append((pos, f"devices[{j}].bus: bus '{bus}' is read all the time by "
                                   f"devices[{i}] '{dev.get('name')}' "
                                   f"({_ref(_pos(conv, ('devices', i)), pos, main)}, mode "
                                   "stream); a streaming sensor needs its bus to itself"))
    return found


def _point_model(model: type[BaseModel] | None) -> type[BaseModel] | None:
    field = model.model_fields.get("points") if model else None
    args = getattr(field.annotation, "__args__", ()) if field else ()
    item = args[0] if args else None
    return item if isinstance(item, type) and issubclass(item, BaseModel) else None


def _overlaps(devs: list[tuple[int, dict[str, Any]]], conv: Converter, main: str,
              models: Mapping[str, type[BaseModel]]) -> list[Issue]:
    """No two points of one device on the same registers (bits of one register are fine)."""
    found: list[Issue] = []
    for i, dev in devs:
        point_model = _point_model(models.get(str(dev.get("driver"))))
        points = dev.get("points")
        if point_model is None or not isinstance(points, list):
            continue
        placed: list[tuple[int, Any]] = []
        for k, raw in enumerate(points):
            try:
                p = point_model.model_validate(raw)
            except ValidationError:
                continue  # reported by validation
            if not all(hasattr(p, a) for a in ("table", "address", "width", "bit")):
                break  # not a register map
            for j, q in placed:
                if _clash(p, q):
                    pos = _pos(conv, ("devices", i, "points", k, "address"))
                    there = _ref(_pos(conv, ("devices", i, "points", j)), pos, main)
                    found.append((pos, f"devices[{i}].points[{k}].address: {_span(p)} overlaps "
                                       f"point '{q.name}' ({_span(q)}, {there}); points may "
                                       "share a register only as its bits (`bit:`)"))
                    break
            placed.append((k, p))
    return found


def _clash(p: Any, q: Any) -> bool:
    if p.table != q.table or p.address >= q.address + q.width or q.address >= p.address + p.width:
        return False
    if p.table in ("coil", "discrete"):
        return True
    if p.bit is None and q.bit is None:
        return True
    return p.bit is not None and p.bit == q.bit  # a word and its bits are fine


def _span(p: Any) -> str:
    end = p.address + p.width - 1
    return f"{p.table} {p.address}" + (f"..{end}" if end != p.address else "") + (
        f" bit {p.bit}" if p.bit is not None else "")
