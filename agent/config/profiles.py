"""Sensor profiles: the register map or line format of a sensor model, written once.

A device says `profile: NAME`; NAME.yaml is looked up in the site's profiles directory
(`profiles_dir`, default `profiles/` beside agent.yaml), then /etc/edge-agent/profiles, then
the profiles shipped in config/profiles (package data: `SHIPPED`). A profile holds `points:`
and any device key that describes the model rather than the installation (byte order, read
limits, line format, interval, timeout); not the device's identity or wiring (name, driver,
bus, unit, host, port, enabled). This module owns finding profiles and merging one into a
device before validation: the device's own keys win, a device point with the name of a profile
point replaces it, and the positions of merged values point into the profile file, so errors
there are reported there.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from importlib import resources
from typing import Any

from pydantic import BaseModel

from agent.config.words import suggest
from agent.config.yaml import Converter, Issue, Loc, Pos, at, read_yaml
from agent.core.configbase import NAME_PATTERN
from agent.core.errors import ConfigError

SHIPPED_DATA = "agent.config.shipped"
"""The package of what the agent ships besides code: the repository's config/ folder, mapped onto
it by pyproject.toml (its profiles/*.yaml and schemas/*.json only), so an installed wheel has it."""


def shipped(folder: str) -> str:
    """The directory of a folder of shipped data (`profiles`, `schemas`); pip installs packages
    unpacked, so it is a real directory (in an editable install, the checkout's config/)."""
    return str(resources.files(SHIPPED_DATA).joinpath(folder))


SHIPPED = shipped("profiles")
"""The sensor profiles shipped with the agent (searched last)."""
SYSTEM = "/etc/edge-agent/profiles"
NOT_IN_PROFILE = ("name", "driver", "profile", "bus", "unit", "host", "port", "enabled")
"""Device keys a profile may not set: they say which device this is and where it is wired."""


def profile_dirs(site_dir: str) -> list[str]:
    """Where `profile: NAME` looks for NAME.yaml, first match wins."""
    return list(dict.fromkeys([site_dir, SYSTEM, SHIPPED]))


def profile_keys(model: type[BaseModel] | None) -> list[str]:
    """Keys a profile for devices of `model` may hold."""
    fields = [f for f in model.model_fields if f not in NOT_IN_PROFILE] if model else []
    return ["points", "description", *[f for f in fields if f != "points"]]


def find(name: str, dirs: list[str]) -> tuple[str | None, list[str]]:
    """(path of NAME.yaml or None, names of the profiles that exist)."""
    known: set[str] = set()
    if re.match(NAME_PATTERN, name):
        for folder in dirs:
            path = os.path.join(folder, f"{name}.yaml")
            if os.path.isfile(path):
                return path, []
    for folder in dirs:
        with contextlib.suppress(OSError):
            known |= {f[:-5] for f in os.listdir(folder) if f.endswith(".yaml")}
    return None, sorted(known)


def _shift(conv: Converter, prefix: Loc, by: int) -> None:
    """Renumber remembered positions of list items under `prefix` by `by`."""
    n = len(prefix)
    for table in (conv.value_pos, conv.key_pos):
        moved = {(*loc[:n], int(loc[n]) + by, *loc[n + 1:]): pos for loc, pos in table.items()
                 if loc[:n] == prefix and len(loc) > n and isinstance(loc[n], int)}
        for loc in [loc for loc in table if loc[:n] == prefix and len(loc) > n]:
            del table[loc]
        table.update(moved)


def apply(data: dict[str, Any], conv: Converter, dirs: list[str],
          models: Mapping[str, type[BaseModel]]) -> list[Issue]:
    """Merge each device's `profile:` file into it (see the module docstring)."""
    issues: list[Issue] = []
    trees: dict[str, Any] = {}
    devices = data.get("devices")
    for i, dev in enumerate(devices if isinstance(devices, list) else []):
        if not isinstance(dev, dict) or not isinstance(dev.get("profile"), str):
            continue
        name = dev["profile"]
        where = conv.value_pos.get(("devices", i, "profile"), (1, 1))
        path, known = find(name, dirs)
        if path is None:
            issues.append((where, f"devices[{i}].profile: no profile {name!r} (looked for "
                                  f"{name}.yaml in {', '.join(dirs)}); known: "
                                  f"{', '.join(known) or 'none'}{suggest(name, known)}"))
            conv.bad.append(("devices", i, "points"))  # "missing points" would be noise
            continue
        try:
            if path not in trees:
                trees[path] = read_yaml(path)
        except ConfigError as exc:
            issues += [(at(path, (e.line, e.col)) or (1, 1), e.message) for e in exc.issues]
            conv.bad.append(("devices", i, "points"))
            continue
        model = models.get(dev.get("driver"))  # type: ignore[arg-type]
        issues += _merge(dev, i, name, path, trees[path], conv, profile_keys(model), model)
    return issues


def _merge(dev: dict[str, Any], i: int, name: str, path: str, tree: Any, conv: Converter,
           allowed: list[str], model: type[BaseModel] | None) -> list[Issue]:
    issues: list[Issue] = []
    pconv = Converter()
    pconv.file = path
    top: Pos = at(path, (1, 1)) or (1, 1)
    profile = pconv.convert(tree, (), top)
    issues += pconv.issues
    if not isinstance(profile, dict) or not isinstance(profile.get("points", []), list):
        return [*issues, (top, f"profile {name}: expected a mapping with a `points` list")]
    own = dev.get("points", [])
    if not isinstance(own, list):
        return issues
    mine = {p.get("name") for p in own if isinstance(p, dict)}
    theirs = profile.get("points", [])
    kept = [k for k, p in enumerate(theirs) if not (isinstance(p, dict) and p.get("name") in mine)]
    _shift(conv, ("devices", i, "points"), len(kept))
    renumber = {old: new for new, old in enumerate(kept)}
    for table, ptable in ((conv.value_pos, pconv.value_pos), (conv.key_pos, pconv.key_pos)):
        for loc, pos in ptable.items():
            if loc[:1] == ("points",) and len(loc) > 1 and loc[1] in renumber:
                table[("devices", i, "points", renumber[int(loc[1])], *loc[2:])] = pos
            elif loc and loc[0] != "points" and loc[0] not in dev:
                table[("devices", i, *loc)] = pos
    for key, value in profile.items():
        if key in allowed and key not in ("points", "description"):
            dev.setdefault(key, value)
        elif key not in allowed and (model is not None or key in NOT_IN_PROFILE):
            why = ("is not for a profile: it says which device this is or where it is wired; "
                   "set it in the device's own config" if key in NOT_IN_PROFILE else
                   f"is an unknown key; allowed: {', '.join(allowed)}{suggest(key, allowed)}")
            issues.append((pconv.key_pos.get((key,), top), f"profile {name}: {key!r} {why}"))
    if "points" in profile or "points" in dev:
        dev["points"] = [theirs[k] for k in kept] + own
    conv.value_pos.setdefault(("devices", i, "points"),
                              conv.value_pos.get(("devices", i, "profile"), top))
    return issues
