"""The agent's configuration: agent.yaml (+ devices.d/) -> validated, frozen pydantic models.

This module owns the config models (gateway, queue, logging, buses, and the device list as a
union discriminated on `driver`, built from `drivers.CONFIG_MODELS`; the `mqtt:` section is
`agent.config.mqtt`'s) and `load`: it reads agent.yaml and one device per devices.d/*.yaml file,
merges sensor profiles, runs the cross-checks and validates, collecting every problem as a
`ConfigIssue` located as file:line:col. Its helpers: `config_yaml` (reading files, positions,
`${VAR}`), `profiles`, `config_checks` (cross-checks), `config_words` (what errors say),
`config_schema` (the JSON Schema editors use).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import Field, ValidationError, ValidationInfo
from pydantic import field_validator as field_check

from agent.config import profiles
from agent.config.checks import cross_checks, short
from agent.config.mqtt import MqttConfig
from agent.config.status_page import StatusPageConfig
from agent.config.words import describe, show
from agent.config.yaml import Converter, Issue, at, issue, node_pos, read_yaml
from agent.core.configbase import NAME_PATTERN, Strict
from agent.core.errors import ConfigError, ConfigIssue
from agent.core.units import ByteSize, Duration
from agent.transport.ports import BusConfig
from drivers.base import DeviceConfig
from drivers.registry import CONFIG_MODELS

__all__ = ["AgentConfig", "ConfigError", "GatewayConfig", "Loaded", "LogConfig", "MqttConfig",
           "QueueConfig", "load", "load_config"]
_TOP_KEYS = "gateway, mqtt, queue, devices"


class GatewayConfig(Strict):
    """Who this gateway is: its id appears in every MQTT topic it publishes."""

    id: str = Field(pattern=NAME_PATTERN, max_length=64, description="gateway id (topic level)")
    site: str | None = Field(default=None, description="free-form site label, e.g. songdo-d3")
    clock: Literal["auto", "trusted"] = Field(
        default="auto", description="auto: readings are flagged until NTP has synchronized the "
        "clock (the kernel says so); trusted: the clock is always right (battery RTC)")


class QueueConfig(Strict):
    """The SQLite store-and-forward queue."""

    path: str = Field(
        min_length=1,
        description="SQLite queue file; a relative path is resolved against the directory of "
        "the config file, so the loaded config always holds an absolute path",
    )
    synchronous: Literal["full", "normal"] = Field(
        default="full", description="SQLite synchronous mode: full survives power loss"
    )
    max_bytes: ByteSize = Field(
        default=1_000_000_000, ge=0,
        description="most bytes the queued readings may use; past it the oldest are evicted "
        "(counted). 0: no bound",
    )
    max_age: Duration = Field(
        default=0.0, ge=0, description="evict (counted) readings older than this. 0: no bound")
    min_free: ByteSize = Field(
        default=100_000_000, ge=0,
        description="free disk space to keep on the queue's filesystem; below it the oldest "
        "readings are evicted (counted). 0: no reserve",
    )
    backlog_rate: int = Field(
        default=0, ge=0,
        description="cap on backlog readings sent per second after an outage (live readings "
        "are never held back). 0: no cap",
    )

    @field_check("path")
    @classmethod
    def _absolute(cls, value: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir") or os.getcwd()
        return os.path.normpath(os.path.join(base, value))


class LogConfig(Strict):
    """Logging: level and output format."""

    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="lowest level logged"
    )
    format: Literal["auto", "console", "json"] = Field(
        default="auto", description="auto: console on a terminal, JSON otherwise"
    )


if TYPE_CHECKING:
    AnyDevice = DeviceConfig
else:  # one tagged member per registered driver, chosen by the `driver` key
    AnyDevice = Annotated[Union[tuple(CONFIG_MODELS.values())], Field(discriminator="driver")]  # noqa: UP007


class AgentConfig(Strict):
    """The whole agent configuration file."""

    gateway: GatewayConfig = Field(description="identity of this gateway")
    mqtt: MqttConfig = Field(description="MQTT uplink")
    queue: QueueConfig = Field(description="store-and-forward queue")
    log: LogConfig = Field(default=LogConfig(), description="logging")
    status_page: StatusPageConfig = Field(default=StatusPageConfig(), description="the "
                                          "technician's local status page and /metrics")
    buses: tuple[BusConfig, ...] = Field(
        default=(), description="shared lines (RS-485 ports, serial-to-Ethernet converters)")
    devices: tuple[AnyDevice, ...] = Field(
        default=(), description="devices to poll (at least one here or in devices_dir); "
        "`driver` picks the kind: " + ", ".join(CONFIG_MODELS))
    devices_dir: str = Field(
        default="devices.d", validate_default=True,
        description="more devices, one per *.yaml file in this directory (relative to this "
        "file); adding a sensor = dropping a file")
    profiles_dir: str = Field(
        default="profiles", validate_default=True,
        description="the site's sensor profiles (relative to this file); searched before "
        "/etc/edge-agent/profiles and the shipped ones")

    @field_check("devices_dir", "profiles_dir")
    @classmethod
    def _absolute_dir(cls, value: str, info: ValidationInfo) -> str:
        base = (info.context or {}).get("base_dir") or os.getcwd()
        return os.path.normpath(os.path.join(base, value))


def json_schema() -> dict[str, Any]:
    """JSON Schema of the config file, for editors (see `agent.config.schema`)."""
    return AgentConfig.model_json_schema()


DEVICES_DIR = "devices.d"


@dataclass(frozen=True)
class Loaded:
    """A validated config and the files it was read from (agent.yaml first, then devices.d)."""

    config: AgentConfig
    files: tuple[str, ...]


def load_config(path: str | os.PathLike[str], env: Mapping[str, str] | None = None
                ) -> AgentConfig:
    """Read, parse and validate a config; raise `ConfigError` with every issue found."""
    return load(path, env).config


def load(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> Loaded:
    """`load_config`, also saying which files were read. `env` (default: the process
    environment) supplies `${VAR}` values."""
    file = str(os.fspath(path))
    conv = Converter(env)
    dropins: dict[str, int] = {}  # devices.d file -> index in devices
    read: list[str] = [file]  # files in the order they were read

    def error(issues: list[Issue]) -> ConfigError:
        order = read
        found = [_relabel(issue(pos, msg, file), dropins, file) for pos, msg in issues]
        found = sorted(dict.fromkeys(found), key=lambda i: (
            order.index(i.file) if i.file in order else len(order), i.file, i.line, i.col))
        return ConfigError(found)

    tree = read_yaml(file)
    if tree is None:
        raise error([((1, 1), f"the file is empty; expected a mapping with {_TOP_KEYS}")])
    try:
        data = conv.convert(tree, (), node_pos(tree) or (1, 1))
    except RecursionError:
        raise error([((1, 1), "the YAML is nested too deeply")]) from None
    if not isinstance(data, dict):
        raise error([*conv.issues, ((node_pos(tree) or (1, 1)), "the top level must be a "
                                    f"mapping with {_TOP_KEYS}; got {show(data)}")])
    base = os.path.dirname(os.path.abspath(file))
    issues = _read_devices_dir(data, conv, base, dropins, read)
    site = data.get("profiles_dir")
    site = os.path.join(base, site if isinstance(site, str) else "profiles")
    issues += profiles.apply(data, conv, profiles.profile_dirs(site), CONFIG_MODELS)
    issues += conv.issues + cross_checks(data, conv, file, CONFIG_MODELS)
    try:
        config = AgentConfig.model_validate(data, context={"base_dir": base})
    except ValidationError as exc:
        errors = [(_untagged(tuple(e["loc"])), e) for e in exc.errors()]
        typos = {(loc[:-1], str(loc[-1])) for loc, e in errors if e["type"] == "extra_forbidden"}
        for loc, err in errors:
            if any(loc[: len(bad)] == bad for bad in conv.bad) or (
                    err["type"] == "missing" and any(  # "did you mean" on the typo says it
                        parent == loc[:-1] and difflib.get_close_matches(key, [str(loc[-1])])
                        for parent, key in typos)):
                continue
            issues += describe(err, loc, data, conv, AgentConfig, CONFIG_MODELS)
        raise error(issues or [((1, 1), "invalid configuration")]) from None
    if issues:
        raise error(issues)
    return Loaded(config, (file, *dropins))


def _untagged(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """pydantic puts the union tag after devices[i]: drop it."""
    if len(loc) >= 3 and loc[0] == "devices" and loc[2] in CONFIG_MODELS:
        return loc[:2] + loc[3:]
    return loc


def _read_devices_dir(data: dict[str, Any], conv: Converter, base: str,
                      dropins: dict[str, int], read: list[str]) -> list[Issue]:
    """Append one device per devices.d/*.yaml file (in name order) to `devices`."""
    raw = data.get("devices_dir", DEVICES_DIR)
    if not isinstance(raw, str):
        return []  # validation says what is wrong with it
    folder = os.path.normpath(os.path.join(base, raw))
    issues: list[Issue] = []
    try:
        names = sorted(n for n in os.listdir(folder)
                       if n.endswith((".yaml", ".yml")) and not n.startswith("."))
    except OSError as exc:
        if "devices_dir" in data or not isinstance(exc, FileNotFoundError):
            issues.append((conv.value_pos.get(("devices_dir",), (1, 1)),
                           f"devices_dir: cannot read {folder}: {exc.strerror or exc}"))
        names = []
    devices = data.setdefault("devices", [])
    if not isinstance(devices, list):
        return issues
    for name in names:
        path = os.path.join(folder, name)
        read.append(path)
        top = at(path, (1, 1)) or (1, 1)
        try:
            tree = read_yaml(path)
        except ConfigError as exc:
            issues += [(at(path, (e.line, e.col)) or top, e.message) for e in exc.issues]
            continue
        conv.file = path
        dev = conv.convert(tree, ("devices", len(devices)), at(path, node_pos(tree)) or top)
        conv.file = None
        if not isinstance(dev, dict):
            got = "nothing (the file is empty)" if tree is None else show(dev)
            issues.append((top, f"expected one device (a mapping with name, driver, ...), got "
                                f"{got}; put each device in its own file"))
            continue
        dropins[path] = len(devices)
        devices.append(dev)
    if not devices and not names:  # a broken devices.d file says so itself
        where = conv.value_pos.get(("devices",), (1, 1))
        issues.append((where, f"devices: needs at least 1 item; list devices under `devices:` "
                              f"or put one file per device into {folder}/"))
    return issues


def _relabel(found: ConfigIssue, dropins: dict[str, int], main: str) -> ConfigIssue:
    """In messages about a devices.d device, name its file instead of `devices[i]`: the
    technician never sees that list. In the device's own file the prefix is just dropped."""
    by_index = {i: f for f, i in dropins.items()}

    def label(m: re.Match[str]) -> str:
        f = by_index.get(int(m.group(1)))
        if f is None:
            return m.group(0)
        if m.start() == 0 and f == found.file:
            return ""
        return f"devices[{short(f, main)}]"

    text = re.sub(r"devices\[(\d+)\]", label, found.message)
    if text != found.message and text[:1] in ".:":  # the prefix was dropped
        text = text[1:].lstrip()
    return ConfigIssue(found.file, found.line, found.col, text)

