"""The `serial_line` driver: sensors that speak a text protocol on a serial line.

It owns the device's config model (mode, command, framing, format, checksum, points) and turns
the bytes of one environment station, parking controller or similar into readings. In `poll`
mode each poll sends the command and parses the first valid reply frame, within the timeout,
under the bus's lock like any request. In `stream` mode the sensor talks on its own: the core's
`agent.transport.stream.Listener` keeps reading the port between polls (and reopens it when a USB
adapter comes back); each poll frames and parses what it heard since the last one, with the
arrival time as the readings' time. Measurement points report the latest value (or every one,
`frames: all`); `state` points (bay occupancy, `accumulate` counters fed by `IN+1` events)
report every change and their held state at each poll, so the core's `on_change` and
`max_silence` send them on change with a periodic full state. Bad frames are counted, logged
once per kind with a safe sample, and set the quality of readings that got no valid value; a
poll keeps at most `MAX_FRAMES` valid frames (the newest; a flood's older ones are counted as
`overflow` and logged, so memory stays bounded whatever the sensor sends); a
line without a valid frame for `stale_after` fails the poll as `stale` (the core reports the
device offline once). Framing and parsing are `drivers.serial_line.parse`'s.
"""

from __future__ import annotations

import difflib
import math
import re
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from agent.core import log
from agent.core.configbase import Strict
from agent.core.errors import DeviceTimeout, DeviceUnreachable
from agent.core.model import GOOD, Reading, Value, now_ms
from agent.core.units import Duration
from agent.transport.ports import Port
from agent.transport.stream import Listener
from drivers.base import DeviceConfig, PointConfig
from drivers.serial_line.parse import (
    ChecksumSpec,
    ChecksumType,
    Event,
    FieldSpec,
    FieldType,
    Format,
    Framer,
    LineParser,
    Parsed,
    from_hex,
    safe,
    unescape,
)
from drivers.serial_line.pattern import compile_pattern


def _groups(pattern: str) -> list[str]:
    """The named groups of a pattern `compile_pattern` accepted (same names on both engines)."""
    return list(re.compile(pattern).groupindex)


def _escaped(value: str | None) -> str | None:
    """A config string that will become bytes: its escapes must be valid (ValueError says)."""
    if value is not None:
        unescape(value)
    return value


MAX_FRAMES = 1000
"""Valid frames one poll keeps (the newest); a sensor sending more per interval is flooding."""
Updates = deque[tuple[int, Parsed]]
"""One poll's valid frames with their arrival time, at most MAX_FRAMES."""


class DeviceStale(DeviceTimeout):
    """The line gave no valid frame for `stale_after`."""

    quality = "stale"


class LinePoint(PointConfig):
    """One field of the frames: where it is (`group`, `key` or `index`) and how to read it."""

    group: str | None = Field(default=None, description="format regex: the named group")
    key: str | None = Field(default=None, description="format pairs: the key, e.g. PM2.5")
    index: int | None = Field(default=None, ge=-64, le=255,
                              description="format fields: position, 0 = first (-1 = last)")
    type: FieldType = "float"
    scale: float = 1.0
    offset: float = 0.0
    base: Literal[10, 16] = Field(default=10, description="type int: 16 for hex digits")
    state: bool = Field(default=False, description="a state held until the sensor reports "
                        "a change (reported at every poll)")
    accumulate: bool = Field(default=False, description="add each event's value to a total "
                             "that starts at `offset` (IN+1 counters)")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        where = [k for k in ("group", "key", "index") if getattr(self, k) is not None]
        if len(where) != 1:
            raise ValueError("give exactly one of `group` (format regex), `key` (format "
                             f"pairs) or `index` (format fields); got {', '.join(where) or 'none'}")
        if self.type in ("bool", "string") and (self.scale != 1 or self.offset != 0):
            raise ValueError(f"scale and offset are for numbers, not type {self.type}")
        if self.base != 10 and self.type != "int":
            raise ValueError("`base` is for type int")
        if self.accumulate and self.type not in ("int", "float"):
            raise ValueError("accumulate needs type int or float")
        return self

    @property
    def select(self) -> str | int:
        found = self.group if self.group is not None else self.key
        return found if found is not None else int(self.index or 0)


class ChecksumConfig(Strict):
    """Where the checksum is: at the end of the frame, after `separator` if set."""

    type: ChecksumType = Field(description="xor (NMEA), sum (mod 256), lrc, crc16 (Modbus)")
    separator: str | None = Field(default=None, min_length=1,
                                  description="text before the checksum, e.g. '*'")
    skip: int = Field(default=0, ge=0, le=16, description="leading bytes not covered ($: 1)")
    encoding: Literal["hex", "binary"] = "hex"

    _escapes = field_validator("separator")(lambda value: _escaped(value))

    def spec(self) -> ChecksumSpec:
        sep = unescape(self.separator) if self.separator is not None else None
        return ChecksumSpec(self.type, sep, self.skip, self.encoding)


class SerialLineConfig(DeviceConfig):
    """A text sensor on a bus from `buses:`: how its frames look and which fields to keep."""

    driver: Literal["serial_line"]
    bus: str = Field(min_length=1, description="name of an entry in `buses:`")
    mode: Literal["stream", "poll"] = Field(
        description="stream: the sensor talks on its own; poll: send `command`, parse reply")
    command: str | None = Field(default=None, min_length=1,
                                description="request (poll) or start command (stream), "
                                "with escapes: 'READ\\r\\n', '\\x1bR'")
    command_hex: str | None = Field(default=None, description="the command as hex bytes")
    terminator: str = Field(default="\n", min_length=1, description="end of a frame")
    start: str | None = Field(default=None, min_length=1, description="start of a frame")
    max_length: int = Field(default=256, ge=4, le=4096, description="longest frame, bytes")
    format: Format = Field(description="regex, pairs (key=value) or fields (by position)")
    pattern: str | None = Field(default=None, description="format regex: named groups")
    separator: str = Field(default=",", min_length=1,
                           description="between pairs or fields; ' ' = any whitespace")
    key_separator: str = Field(default="=", min_length=1, description="between key and value")
    select: str | None = Field(default=None, description="only frames this regex finds "
                               "(others are ignored, e.g. other NMEA sentences)")
    checksum: ChecksumConfig | None = None
    stale_after: Duration = Field(default=60.0, ge=0,
                                  description="no valid frame this long: stale. 0: never")
    frames: Literal["latest", "all"] = Field(
        default="latest", description="stream: per poll, each measurement's latest value or all")
    points: list[LinePoint] = Field(min_length=1)

    _escapes = field_validator("terminator", "start", "command", "separator",
                               "key_separator")(lambda value: _escaped(value))

    @field_validator("command_hex")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None:
            from_hex(value)
        return value

    @field_validator("pattern", "select")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            compile_pattern(value)  # PatternError is a ValueError with a technician's words
        return value

    @field_validator("points")
    @classmethod
    def _selectors(cls, points: list[LinePoint], info: ValidationInfo) -> list[LinePoint]:
        fmt, pattern = info.data.get("format"), info.data.get("pattern")
        want = {"regex": "group", "pairs": "key", "fields": "index"}.get(str(fmt))
        groups = list(_groups(pattern)) if fmt == "regex" and pattern else []
        for i, p in enumerate(points):
            if want is not None and getattr(p, want) is None:
                raise ValueError(f"points[{i}] ({p.name}): format {fmt} finds fields by "
                                 f"`{want}`")
            if groups and p.group not in groups:
                close = difflib.get_close_matches(str(p.group), groups, n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise ValueError(f"points[{i}] ({p.name}): the pattern has no group "
                                 f"'{p.group}'{hint}; its groups: {', '.join(groups)}")
        return points

    @model_validator(mode="after")
    def _modes(self) -> Self:
        if self.command is not None and self.command_hex is not None:
            raise ValueError("give `command` or `command_hex`, not both")
        if self.mode == "poll" and self.command_bytes is None:
            raise ValueError("mode poll needs `command` (or `command_hex`): what to send")
        if self.format == "regex" and not self.pattern:
            raise ValueError("format regex needs `pattern`, e.g. 'T=(?P<temp>[-0-9.]+)'")
        if self.format == "regex" and not _groups(self.pattern or ""):
            raise ValueError("the pattern needs named groups, e.g. (?P<temp>[-0-9.]+)")
        if self.format != "regex" and self.pattern is not None:
            raise ValueError(f"`pattern` is for format regex, not {self.format}")
        if self.start is not None and unescape(self.start) == unescape(self.terminator):
            raise ValueError("`start` and `terminator` must differ")
        return self

    @property
    def command_bytes(self) -> bytes | None:
        if self.command_hex is not None:
            return from_hex(self.command_hex)
        return unescape(self.command) if self.command is not None else None

    @classmethod
    def claims_bus(cls, raw: Mapping[str, Any]) -> bool:
        """A streaming sensor's bus is read all the time: no other device may use it (the
        config's cross-checks ask this of the raw device mapping)."""
        return raw.get("mode") == "stream"


@dataclass(frozen=True, slots=True)
class Seen:
    """One frame (or lost bytes) as the driver met it, for `probe`."""

    ts: int
    event: Event
    parsed: Parsed | None


class SerialLine:
    """One text sensor on a bus; `passive` in stream mode (a core listener does the I/O)."""

    config_model: ClassVar[type[SerialLineConfig]] = SerialLineConfig

    def __init__(self, config: SerialLineConfig, ports: Mapping[str, Port]) -> None:
        c = self.config = config
        self.bus: str | None = c.bus
        self.port = ports[c.bus]
        self.passive = c.mode == "stream"
        self.timeout = c.timeout if "timeout" in c.model_fields_set else self.port.timeout
        self.command = c.command_bytes
        self.framer = Framer(unescape(c.terminator),
                             unescape(c.start) if c.start is not None else None, c.max_length)
        specs = [FieldSpec(p.name, p.select, p.type, p.scale,
                           0.0 if p.accumulate else p.offset, p.base) for p in c.points]
        self.parser = LineParser(c.format, specs, pattern=c.pattern, separator=unescape(
            c.separator).decode("latin-1"), key_separator=unescape(c.key_separator).decode(
            "latin-1"), select=c.select, checksum=c.checksum.spec() if c.checksum else None)
        self.counts: Counter[str] = Counter()  # frames, ignored, and each kind of bad frame
        self._bad_since: Counter[str] = Counter()  # bad frames since the last valid one
        self.trace: list[Seen] | None = None  # set to a list to record (probe)
        self.listener: Listener | None = None
        self._opens = 0
        self._since = time.monotonic()  # the stale clock: last valid frame or (re)open
        self._poll_bad: str | None = None
        self._alive = False  # this poll saw a valid frame that was not `select`ed
        self._overflow = 0  # valid frames this poll dropped past MAX_FRAMES
        self._last_bad = b""
        self._held: dict[str, Value] = {p.name: int(p.offset) if p.type == "int" and
                                        p.offset.is_integer() else p.offset
                                        for p in c.points if p.accumulate}
        self._noise: dict[str, log.Episode] = {}
        self._log = log.get("parse", c.name)

    def metrics(self) -> list[tuple[str, str | None]]:
        return [(p.name, p.unit) for p in self.config.points]

    def open(self) -> None:
        """Stream mode: start the core's listener on the port (it opens and reopens it)."""
        if self.passive and self.listener is None:
            self._since = time.monotonic()
            self.listener = Listener(self.port, self.config.name, greeting=self.command)
            self.listener.start()

    def close(self) -> None:
        """Stop listening; a polled device leaves the shared bus open for the others."""
        if self.listener is not None:
            self.listener.stop()
            self.listener = None

    def poll(self) -> list[Reading]:
        self._poll_bad, self._alive, self._overflow = None, False, 0
        updates = self._heard() if self.passive else self._ask()
        if self._overflow:
            self._bad("overflow", b"", f"{self._overflow} valid frame(s) past the {MAX_FRAMES} "
                      "a poll keeps were dropped (the oldest); poll more often or use "
                      "frames: latest")
        now = time.monotonic()
        if updates or self._alive:  # a valid frame not `select`ed (a heartbeat) is life too
            self._since = now
            self._bad_since.clear()
        elif self.config.stale_after and now - self._since >= self.config.stale_after:
            noise = ", ".join(f"{n} {k}" for k, n in sorted(self._bad_since.items()))
            quiet = now - self._since
            raise DeviceStale(f"no valid frame for {quiet:.{0 if quiet >= 10 else 1}f} s on "
                              f"{self.port.name}" + (f" (meanwhile {noise}; last: "
                                                     f"'{safe(self._last_bad)}')" if noise else ""))
        return self._readings(updates)

    def _heard(self) -> Updates:
        """Stream mode: frame and parse what the listener got since the last poll."""
        if self.listener is None:
            self.open()
        assert self.listener is not None
        heard = self.listener.take()
        updates: Updates = deque(maxlen=MAX_FRAMES)
        for chunk in heard.chunks:
            if chunk.opens != self._opens:
                self._frames(self.framer.reset(), chunk.ts, updates)  # cut off by the unplug
                self._opens = chunk.opens
            self._frames(self.framer.feed(chunk.data), chunk.ts, updates)
        if heard.dropped:
            self._bad("overflow", b"", f"{heard.dropped} bytes arrived faster than polled")
        self._since = max(self._since, heard.opened_at)
        if not updates and heard.error is not None:
            raise DeviceUnreachable(heard.error)
        return updates

    def _ask(self) -> Updates:
        """Poll mode: send the command, read frames until a valid one or the timeout."""
        assert self.command is not None
        port, updates = self.port, Updates(maxlen=MAX_FRAMES)
        with port.lock:
            port.discard_input()
            self.framer.reset()
            port.send(self.command)
            deadline = time.monotonic() + self.timeout
            while not updates and (left := deadline - time.monotonic()) > 0:
                if data := port.read_available(left):
                    self._frames(self.framer.feed(data), now_ms(), updates)
            held = self.framer.held
        if not updates and self._poll_bad is None:
            got = (f"; got {len(held)} byte(s) without terminator '{safe(self.framer.terminator)}'"
                   f": '{safe(held)}'" if held else "")
            raise DeviceTimeout(f"no reply to '{safe(self.command)}' on {port.name}{got}")
        return updates

    def _frames(self, events: list[Event], ts: int, updates: Updates) -> None:
        for ev in events:
            parsed = self.parser.parse(ev.data) if ev.kind == "frame" else None
            if self.trace is not None:
                self.trace.append(Seen(ts, ev, parsed))
            if parsed is None:
                self._bad(ev.kind, ev.data, "")
            elif parsed.good:
                self.counts["frames"] += 1
                if len(updates) == MAX_FRAMES:  # the oldest one goes: counted, logged
                    self._overflow += 1
                updates.append((ts, parsed))
            elif parsed.kind == "ignored":
                self.counts["ignored"] += 1
                self._alive = True
            else:
                self._bad(parsed.kind, ev.data, parsed.detail)

    def _bad(self, kind: str, data: bytes, detail: str) -> None:
        """Count a bad frame; log the first of each kind (and a summary every 5 minutes)."""
        self.counts[kind] += 1
        self._bad_since[kind] += 1
        self._poll_bad, self._last_bad = kind, data
        episode = self._noise.setdefault(kind, log.Episode(self._log, "bad frames", "-"))
        episode.failed(kind, sample=safe(data), detail=detail or None, port=self.port.name)

    def _readings(self, updates: Updates) -> list[Reading]:
        """Readings of this poll's valid frames, held states, and why other points got none."""
        c, now, out = self.config, now_ms(), list[Reading]()
        for p in c.points:
            hits = [(ts, r) for ts, parsed in updates for r in parsed.fields
                    if r.spec.name == p.name and r.text is not None]
            if p.accumulate or p.state or c.frames == "all":
                for ts, r in hits:
                    value, quality = r.value, r.quality
                    if p.accumulate and quality == GOOD:
                        value = _add(self._held[p.name], value)
                        quality = GOOD if value is not None else "not_finite"
                    if (p.accumulate or p.state) and quality == GOOD:
                        self._held[p.name] = value
                    out.append(Reading(c.name, p.name, value, p.unit, ts, quality))
            elif hits:
                ts, r = next((h for h in reversed(hits) if h[1].quality == GOOD), hits[-1])
                out.append(Reading(c.name, p.name, r.value, p.unit, ts, r.quality))
            if hits:
                continue
            if p.name in self._held:
                out.append(Reading(c.name, p.name, self._held[p.name], p.unit, now))
            elif not (p.state or p.accumulate) and (self._poll_bad or (updates and not
                                                                         self.passive)):
                out.append(Reading(c.name, p.name, None, p.unit, now, self._poll_bad or "missing"))
        return out


def _add(total: Value, step: Value) -> Value:
    """A counter's next total (None if it overflowed); decimal steps keep tidy decimals."""
    assert isinstance(total, int | float) and isinstance(step, int | float)
    result = total + step
    if isinstance(result, float):
        return round(result, 9) if math.isfinite(result) else None
    return result if abs(result) < 2**63 else None
