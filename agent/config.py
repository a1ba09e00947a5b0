"""The agent's configuration: YAML file -> validated, frozen pydantic models, or a `ConfigError`.

This module owns the config models (gateway, MQTT uplink, queue, logging, and the device list as
a union discriminated on `driver`, built from `drivers.CONFIG_MODELS`), the YAML loader (ruamel
round-trip, safe: no Python tags), and the translation of every problem it finds - unreadable
file, YAML syntax, bad value, unknown key, duplicate name - into a `ConfigIssue` located as
`file:line:col` with a dotted path, what is wrong and what is allowed.
"""

from __future__ import annotations

import codecs
import contextlib
import datetime
import difflib
import os
import re
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, Field, ValidationError, ValidationInfo
from pydantic import field_validator as field_check
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedOrderedMap, CommentedSet, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scalarbool import ScalarBoolean

from agent.bus import BusConfig
from agent.errors import ConfigError, ConfigIssue
from agent.mqtt_config import TOPIC_PREFIX_PATTERN, MqttConfig
from agent.units import ByteSize, Duration, parse_duration
from drivers import CONFIG_MODELS
from drivers.base import NAME_PATTERN, DeviceConfig, Strict

_TOP_KEYS = "gateway, mqtt, queue, devices"
PROFILES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "config", "profiles")
"""The sensor profiles shipped with the agent; `profiles/` beside the config file and
/etc/edge-agent/profiles are searched first."""
PROFILE_DEFAULTS = ("byte_order", "max_gap", "max_registers_per_read", "max_bits_per_read",
                    "timeout", "interval")
"""Device keys a profile may set; the device's own value wins."""


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
    buses: tuple[BusConfig, ...] = Field(
        default=(), description="shared lines (RS-485 ports, serial-to-Ethernet converters)")
    devices: tuple[AnyDevice, ...] = Field(
        min_length=1, description="devices to poll; `driver` picks the kind: "
        + ", ".join(CONFIG_MODELS)
    )


def json_schema() -> dict[str, Any]:
    """JSON Schema of the config file, for editors."""
    return AgentConfig.model_json_schema()


Loc = tuple[str | int, ...]
Pos = tuple[int, int]
Issue = tuple[Pos, str]


class _At(tuple[int, int]):
    """A position in another file than the config itself (a profile)."""

    file: str


def _in(file: str | None, pos: Pos | None) -> Pos | None:
    if file is None or pos is None:
        return pos
    at = _At(pos)
    at.file = file
    return at


def load_config(path: str | os.PathLike[str]) -> AgentConfig:
    """Read, parse and validate a config file; raise `ConfigError` with every issue found."""
    file = str(os.fspath(path))

    def error(issues: list[Issue]) -> ConfigError:
        issues = sorted(dict.fromkeys(issues), key=lambda i: (getattr(i[0], "file", ""), i[0]))
        return ConfigError([ConfigIssue(getattr(pos, "file", file), pos[0], pos[1], msg)
                            for pos, msg in issues])  # file order, no repeats

    tree = _parse(file, error)
    if tree is None:
        raise error([((1, 1), f"the file is empty; expected a mapping with {_TOP_KEYS}")])
    conv = _Converter()
    try:
        data = conv.convert(tree, (), _lc(tree) or (1, 1), 0)
    except RecursionError:
        raise error([((1, 1), "the YAML is nested too deeply")]) from None
    if not isinstance(data, dict):
        raise error([*conv.issues, ((_lc(tree) or (1, 1)), "the top level must be a mapping "
                                    f"with {_TOP_KEYS}; got {_show(data)}")])
    base = os.path.dirname(os.path.abspath(file))
    issues = _apply_profiles(data, conv, base) + conv.issues + _duplicates(data, conv)
    issues += _bus_checks(data, conv)
    try:
        config = AgentConfig.model_validate(data, context={"base_dir": base})
    except ValidationError as exc:
        for err in exc.errors():
            loc = tuple(err["loc"])
            if len(loc) >= 3 and loc[0] == "devices" and loc[2] in CONFIG_MODELS:
                loc = loc[:2] + loc[3:]  # drop the union tag pydantic puts after devices[i]
            if not any(loc[: len(bad)] == bad for bad in conv.bad):
                issues += _describe(err, loc, data, conv)
        raise error(issues or [((1, 1), "invalid configuration")]) from None
    if issues:
        raise error(issues)
    return config


def _parse(file: str, error: Callable[[list[Issue]], ConfigError]) -> Any:
    """The file's YAML document as ruamel's round-trip tree (no Python objects are built)."""
    try:
        with open(file, "rb") as fh:
            blob = fh.read().removeprefix(codecs.BOM_UTF8)
    except OSError as exc:
        why = {FileNotFoundError: "no such file", IsADirectoryError: "it is a directory",
               PermissionError: "permission denied"}.get(type(exc), exc.strerror or str(exc))
        raise error([((1, 1), f"cannot read the config: {why}")]) from None
    except ValueError as exc:  # e.g. a NUL byte in the path
        raise error([((1, 1), f"cannot read the config: {exc}")]) from None
    if b"\x00" in blob:
        at = _pos_at(blob, blob.index(b"\x00"))
        raise error([(at, "the file contains a NUL byte: it looks binary, not YAML text")])
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error([(_pos_at(blob, exc.start), f"the file is not UTF-8 text (byte "
                      f"0x{blob[exc.start]:02x}); save it as UTF-8")]) from None
    try:
        with warnings.catch_warnings():  # e.g. a reused anchor: legal YAML, not worth a warning
            warnings.simplefilter("ignore")
            return YAML(typ="rt").load(text)
    except ReaderError as exc:
        at, ch = _pos_at(blob, len(text[: exc.position].encode())), exc.character
        code = ch if isinstance(ch, int) else ord(str(ch)[:1] or " ")
        raise error([(at, f"invalid YAML: character U+{code:04X} is not allowed")]) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        raise error([(at, _yaml_message(exc, text, at[0]))]) from None
    except RecursionError:
        raise error([((1, 1), "invalid YAML: nested too deeply")]) from None
    except Exception as exc:  # YAMLError, or a parser bug on hostile input: still a ConfigError
        raise error([((1, 1), f"invalid YAML: {exc}")]) from None


def _yaml_message(exc: MarkedYAMLError, text: str, line: int) -> str:
    problem = str(exc.problem or "syntax error")
    if found := re.match(r'found duplicate key "(.*)" with value', problem):
        return f"duplicate key '{found.group(1)}'; a key may appear only once in a mapping"
    msg = f"invalid YAML: {problem}" + (f" ({exc.context})" if exc.context else "")
    lines = text.splitlines()
    here = lines[line - 1] if line <= len(lines) else ""
    if "\\t" in problem or "\t" in here[: len(here) - len(here.lstrip())]:
        msg += "; hint: tabs are not allowed for indentation; use spaces"
    return msg


def _pos_at(blob: bytes, index: int) -> Pos:
    start = blob.rfind(b"\n", 0, index) + 1
    return blob.count(b"\n", 0, index) + 1, len(blob[start:index].decode("utf-8", "replace")) + 1


def _lc(node: Any, attr: str = "", arg: object = None) -> Pos | None:
    """1-based position from ruamel's line/col data: of the node, or of a key/value/item."""
    try:
        found = getattr(node.lc, attr)(arg) if attr else (node.lc.line, node.lc.col)
    except (AttributeError, KeyError, IndexError, TypeError):
        return None
    ok = isinstance(found, tuple) and all(isinstance(n, int) for n in found[:2])
    return (found[0] + 1, found[1] + 1) if ok else None


class _Converter:
    """ruamel tree -> plain dict/list/scalars, remembering where each key and value was."""

    def __init__(self) -> None:
        self.value_pos: dict[Loc, Pos] = {}
        self.key_pos: dict[Loc, Pos] = {}
        self.issues: list[Issue] = []
        self.bad: list[Loc] = []  # refused values: pydantic's errors about them are noise
        self.budget = 200_000  # nodes, aliases expanded
        self.file: str | None = None  # set while converting a profile file

    def _refuse(self, loc: Loc, pos: Pos, what: str) -> None:
        self.issues.append((pos, f"{_dotted(loc)}: {what}"))
        self.bad.append(loc)

    def convert(self, node: Any, loc: Loc, pos: Pos, depth: int) -> Any:
        self.value_pos[loc] = pos
        self.budget -= 1
        tag = getattr(getattr(node, "tag", None), "value", None)
        if self.budget < 0 or depth > 64:
            if self.budget == -1 or depth == 65:
                self._refuse(loc, pos, "too large or nested too deeply (aliases expanded)")
        elif isinstance(node, TaggedScalar) and tag == f"{_CORE}str":
            return str(node.value)
        elif isinstance(tag, str) and tag not in (f"{_CORE}map", f"{_CORE}seq"):
            self._refuse(loc, pos, f"YAML tag {tag.replace(_CORE, '!!')} is not allowed; "
                                   "write plain values")
        elif isinstance(node, CommentedOrderedMap | CommentedSet | bytes):
            self._refuse(loc, pos, f"YAML type {type(node).__name__} is not allowed here")
        elif isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, value in node.items():
                # keys merged in by `<<` have no position
                kpos = _in(self.file, _lc(node, "key", key)) or pos
                if isinstance(key, int):  # value maps: {0: stopped, 1: running}; bool is int
                    key = str(int(key))
                if not isinstance(key, str):
                    self.issues.append((kpos, f"{_dotted(loc)}: key {key!r} must be text"))
                    continue
                self.key_pos[(*loc, key)] = kpos
                vpos = (None if value is None else _in(self.file, _lc(node, "value", key))) or kpos
                out[key] = self.convert(value, (*loc, key), vpos, depth + 1)
            return out
        elif isinstance(node, list):
            return [self.convert(v, (*loc, i), _in(self.file, _lc(node, "item", i)) or pos,
                                 depth + 1)
                    for i, v in enumerate(node)]
        elif isinstance(node, datetime.date):
            self._refuse(loc, pos, f"YAML read {node} as a date/time; quote it if you mean text")
        elif node is None or isinstance(node, bool | ScalarBoolean):
            return None if node is None else bool(node)
        elif isinstance(node, int | float | str):  # ruamel's Scalar* subclasses -> plain types
            return next(t(node) for t in (int, float, str) if isinstance(node, t))
        else:
            self._refuse(loc, pos, f"unsupported YAML value {node!r}")
        return None


def _dotted(loc: Loc) -> str:
    text = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    return text or "top level"


def _get(data: Any, loc: Loc) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _show(value: Any) -> str:
    kinds = {type(None): "an empty value", dict: "a mapping", list: "a list"}
    if type(value) in kinds or isinstance(value, bool):
        return kinds.get(type(value)) or str(value).lower()
    return f"{value:g}" if isinstance(value, float) else repr(value)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    found = {m for a in get_args(annotation) if (m := _model_in(a)) is not None}
    return found.pop() if len(found) == 1 else None


def _walk(loc: Any) -> tuple[type[BaseModel] | None, Any]:
    """For a pydantic error loc: the model of the mapping it ends in, and the last field."""
    model: type[BaseModel] | None = AgentConfig
    field = None
    for part in loc:
        if isinstance(part, int):
            continue
        if part in CONFIG_MODELS and (model is None or part not in model.model_fields):
            model, field = CONFIG_MODELS[part], None  # the union's tag
        elif model is not None and part in model.model_fields:
            field = model.model_fields[part]
            model = _model_in(field.annotation)
        else:
            return None, None
    return model, field


def _literals(annotation: Any) -> list[Any]:
    if get_origin(annotation) is Literal:
        return list(get_args(annotation))
    return [v for a in get_args(annotation) for v in _literals(a)]


def _suggest(word: Any, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1) if isinstance(word, str) else []
    return f" (did you mean '{close[0]}'?)" if close else ""


def _bounds(field: Any) -> str:
    unit = " s" if any(getattr(m, "func", None) is parse_duration for m in field.metadata) else ""
    words = {Ge: ("at least", "ge"), Gt: ("more than", "gt"), Le: ("at most", "le"),
             Lt: ("less than", "lt")}
    found = {type(m): f"{getattr(m, words[type(m)][1]):g}{unit}" for m in field.metadata
             if type(m) in words}
    if Ge in found and Le in found:
        return f"allowed {found[Ge]} to {found[Le]}"
    return "allowed " + " and ".join(f"{words[k][0]} {v}" for k, v in found.items())


_CORE = "tag:yaml.org,2002:"
_PATTERNS = {
    NAME_PATTERN: "use letters, digits, '_', '.', '-', starting with a letter or digit",
    TOPIC_PREFIX_PATTERN: "use topic levels of letters, digits, '_', '.', '-' separated by "
    "'/'; no wildcards (+, #), no leading or trailing '/'",
}
_TYPES = {"int": "a whole number", "float": "a number", "bool": "true or false",
          "string": "text", "dict": "a mapping", "model": "a mapping", "list": "a list",
          "tuple": "a list", "model_attributes": "a mapping"}


def _describe(err: Any, loc: Loc, data: Any, conv: _Converter) -> list[Issue]:
    """One pydantic error as an issue: the dotted path, what is wrong, what is allowed."""
    kind, ctx, raw, path = err["type"], err.get("ctx", {}), _get(data, loc), _dotted(loc)
    where, message = loc, f"{path}: {err['msg'].removeprefix('Value error, ')}"
    field = _walk(err["loc"])[1]
    if kind == "missing":
        where, message = loc[:-1], f"{_dotted(loc[:-1])}: missing required key '{loc[-1]}'"
    elif kind == "extra_forbidden":
        model = _walk(err["loc"][:-1])[0]
        names = list(model.model_fields) if model else []
        hint = _suggest(loc[-1], names) or (f"; allowed keys: {', '.join(names)}" if names else "")
        return [(conv.key_pos.get(loc) or _at(loc, conv), f"{path}: unknown key{hint}")]
    elif kind == "union_tag_invalid":
        drv, known = _get(data, (*loc, "driver")), list(CONFIG_MODELS)
        where, message = (*loc, "driver"), (f"{path}.driver: {_show(drv)} is not a known driver; "
                                            f"known: {', '.join(known)}{_suggest(drv, known)}")
    elif kind == "union_tag_not_found" and isinstance(raw, dict):
        message = f"{path}: missing required key 'driver' (one of {', '.join(CONFIG_MODELS)})"
    elif kind == "union_tag_not_found":
        message = f"{path}: expected a mapping (a device), got {_show(raw)}"
    elif kind == "literal_error":
        words = [str(v) for v in _literals(field.annotation)] if field else [ctx["expected"]]
        message = (f"{path}: {_show(raw)} is not allowed; expected one of {', '.join(words)}"
                   f"{_suggest(raw, words)}")
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        shown = _show(raw) + (f" (= {err['input']:g} s)" if isinstance(raw, str) else "")
        message = f"{path}: {shown} is out of range; {_bounds(field) if field else err['msg']}"
    elif kind == "string_pattern_mismatch":
        rule = _PATTERNS.get(ctx["pattern"], f"must match {ctx['pattern']}")
        message = f"{path}: {_show(raw)} is not allowed; {rule}"
    elif kind == "string_too_short":
        message = f"{path}: must not be empty"
    elif kind == "string_too_long":
        message = f"{path}: too long; at most {ctx['max_length']} characters"
    elif kind == "too_short":
        if isinstance(raw, list) and len(raw) >= ctx["min_length"]:
            return []  # only a consequence of invalid items, which are reported themselves
        message = f"{path}: needs at least {ctx['min_length']} item(s)"
    elif (base := kind.removesuffix("_type").removesuffix("_parsing")) in _TYPES or (
            base := base.removesuffix("_from_float")) in _TYPES:
        message = f"{path}: expected {_TYPES[base]}, got {_show(raw)}"
    return [(_at(where, conv), message)]


def _at(loc: Loc, conv: _Converter) -> Pos:
    """Where the value at `loc` (or its nearest existing parent) is in the file."""
    return next((conv.value_pos[loc[:n]] for n in range(len(loc), -1, -1)
                 if loc[:n] in conv.value_pos), (1, 1))


def _duplicates(data: dict[str, Any], conv: _Converter) -> list[Issue]:
    """Device names unique in the file, point names unique within their device."""
    found: list[Issue] = []

    def check(items: Any, loc: Loc, what: str) -> None:
        seen: dict[str, Pos] = {}
        for i, item in enumerate(items if isinstance(items, list) else []):
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str):
                continue
            pos = conv.value_pos.get((*loc, i, "name"), (1, 1))
            if name in seen:
                found.append((pos, f"{_dotted((*loc, i, 'name'))}: duplicate {what} name "
                                   f"'{name}' (first used at line {seen[name][0]})"))
            seen.setdefault(name, pos)
            if loc == ("devices",):
                check(item.get("points"), (*loc, i, "points"), "point")

    check(data.get("devices"), ("devices",), "device")
    return found


def profile_dirs(base_dir: str) -> list[str]:
    """Where `profile: NAME` looks for NAME.yaml, first match wins."""
    return [os.path.join(base_dir, "profiles"), "/etc/edge-agent/profiles", PROFILES]


def _find_profile(name: str, base_dir: str) -> tuple[str | None, list[str]]:
    known: set[str] = set()
    for folder in profile_dirs(base_dir):
        path = os.path.join(folder, f"{name}.yaml")
        if os.path.isfile(path):
            return path, []
        with contextlib.suppress(OSError):
            known |= {f[:-5] for f in os.listdir(folder) if f.endswith(".yaml")}
    return None, sorted(known)


def _shift(conv: _Converter, prefix: Loc, by: int) -> None:
    """Renumber remembered positions of list items under `prefix` by `by`."""
    n = len(prefix)
    for table in (conv.value_pos, conv.key_pos):
        moved = {(*loc[:n], int(loc[n]) + by, *loc[n + 1:]): pos for loc, pos in table.items()
                 if loc[:n] == prefix and len(loc) > n and isinstance(loc[n], int)}
        for loc in [loc for loc in table if loc[:n] == prefix and len(loc) > n]:
            del table[loc]
        table.update(moved)


def _apply_profiles(data: dict[str, Any], conv: _Converter, base_dir: str) -> list[Issue]:
    """Merge each device's `profile:` file into it: the profile's points first (a device
    point of the same name replaces one), then the device's own; profile defaults for keys
    the device does not set. Positions of merged values point into the profile file."""
    issues: list[Issue] = []
    devices = data.get("devices")
    for i, dev in enumerate(devices if isinstance(devices, list) else []):
        if not isinstance(dev, dict) or not isinstance(dev.get("profile"), str):
            continue
        at = conv.value_pos.get(("devices", i, "profile"), (1, 1))
        name = dev["profile"]
        path, known = _find_profile(name, base_dir) if re.match(NAME_PATTERN, name) else (
            None, [])
        if path is None:
            where = ", ".join(profile_dirs(base_dir))
            issues.append((at, f"devices[{i}].profile: no profile {name!r} (looked for "
                               f"{name}.yaml in {where}); known: {', '.join(known) or 'none'}"
                               f"{_suggest(name, known)}"))
            conv.bad.append(("devices", i, "points"))  # "missing points" would be noise
            continue
        def perror(found: list[Issue], p: str = path) -> ConfigError:
            return ConfigError([ConfigIssue(p, pos[0], pos[1], msg) for pos, msg in found])

        try:
            tree = _parse(path, perror)
        except ConfigError as exc:
            issues += [(_in(path, (e.line, e.col)) or (1, 1), e.message) for e in exc.issues]
            conv.bad.append(("devices", i, "points"))
            continue
        pconv = _Converter()
        pconv.file = path
        profile = pconv.convert(tree, (), _in(path, (1, 1)) or (1, 1), 0)
        issues += pconv.issues
        top = _in(path, (1, 1)) or (1, 1)
        if not isinstance(profile, dict) or not isinstance(profile.get("points"), list):
            issues.append((top, f"profile {name}: expected a mapping with a `points` list"))
            continue
        own = dev.get("points", [])
        if not isinstance(own, list):
            continue
        own_names = {p.get("name") for p in own if isinstance(p, dict)}
        kept = [k for k, p in enumerate(profile["points"])
                if not (isinstance(p, dict) and p.get("name") in own_names)]
        _shift(conv, ("devices", i, "points"), len(kept))
        renumber = {old: new for new, old in enumerate(kept)}
        for table, ptable in ((conv.value_pos, pconv.value_pos), (conv.key_pos, pconv.key_pos)):
            for loc, pos in ptable.items():
                if loc[:1] == ("points",) and len(loc) > 1 and loc[1] in renumber:
                    table[("devices", i, "points", renumber[int(loc[1])], *loc[2:])] = pos
                elif loc and loc[0] in PROFILE_DEFAULTS and loc[0] not in dev:
                    table[("devices", i, *loc)] = pos
        for key, value in profile.items():
            if key in PROFILE_DEFAULTS:
                dev.setdefault(key, value)
            elif key not in ("points", "description"):
                allowed = ", ".join(("points", "description", *PROFILE_DEFAULTS))
                issues.append((pconv.key_pos.get((key,), top), f"profile {name}: unknown key "
                               f"{key!r}; allowed: {allowed}{_suggest(key, [*PROFILE_DEFAULTS])}"))
        dev["points"] = [profile["points"][k] for k in kept] + own
        conv.value_pos.setdefault(("devices", i, "points"), at)
    return issues


def _bus_checks(data: dict[str, Any], conv: _Converter) -> list[Issue]:
    """Bus names unique, one bus per physical port, every device's `bus` declared."""
    found: list[Issue] = []
    buses = data.get("buses")
    names: dict[str, int] = {}
    claimed: dict[str, int] = {}
    for i, bus in enumerate(buses if isinstance(buses, list) else []):
        if not isinstance(bus, dict):
            continue
        name, port, host = bus.get("name"), bus.get("port"), bus.get("host")
        if isinstance(name, str):
            if name in names:
                found.append((conv.value_pos.get(("buses", i, "name"), (1, 1)),
                              f"buses[{i}].name: duplicate bus name '{name}' (also buses"
                              f"[{names[name]}])"))
            names.setdefault(name, i)
        if isinstance(port, str | int) and not isinstance(port, bool):
            where = (f"{host}:{port}" if isinstance(host, str) else
                     os.path.realpath(port) if isinstance(port, str) else str(port))
            if where in claimed:
                found.append((conv.value_pos.get(("buses", i, "port"), (1, 1)),
                              f"buses[{i}].port: {where} is already claimed by buses"
                              f"[{claimed[where]}]; one bus per physical port (put every "
                              f"device on that line on the same bus)"))
            claimed.setdefault(where, i)
    devices = data.get("devices")
    for i, dev in enumerate(devices if isinstance(devices, list) else []):
        bus = dev.get("bus") if isinstance(dev, dict) else None
        if isinstance(bus, str) and bus not in names:
            known = list(names)
            found.append((conv.value_pos.get(("devices", i, "bus"), (1, 1)),
                          f"devices[{i}].bus: unknown bus '{bus}'; "
                          + (f"declared: {', '.join(known)}{_suggest(bus, known)}" if known
                             else "declare it under `buses:`")))
    return found
