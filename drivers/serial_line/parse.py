"""Pure text-sensor protocol logic: escapes, framing, checksums, field extraction and values.

This module owns everything `serial_line` does to bytes that involves no I/O: turning the
config's escaped strings (`"READ\\r\\n"`, `"\\x02"`) and hex into bytes, showing bytes safely
in logs (`safe`), cutting a byte stream into frames (`Framer`: by line terminator, or start and
end markers, never buffering more than the maximum frame length), checking an NMEA-style XOR,
byte sum, LRC or CRC-16/Modbus checksum, and parsing a frame into the configured fields
(`LineParser`: a regular expression with named groups, key=value pairs, or delimited fields by
position) with type, scale and offset. Nothing here raises on what a device sends: every bad
frame becomes a result whose `kind` says why (`checksum_error`, `no_match`, ...), every bad
field a `quality`; only bad *configuration* raises `ValueError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from agent.core.model import GOOD, Value
from drivers.modbus.frame import crc16
from drivers.serial_line.pattern import compile_pattern

FieldType = Literal["float", "int", "bool", "string"]
Format = Literal["regex", "pairs", "fields"]
ChecksumType = Literal["xor", "sum", "lrc", "crc16"]
SAMPLE = 64
"""Bytes of a bad frame kept as its sample (logs, probe)."""

_ESCAPES = {"r": "\r", "n": "\n", "t": "\t", "0": "\0", "\\": "\\", "e": "\x1b"}
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_SIGNED = re.compile(r"(?P<key>[^+\-\s][^+\-]*?)\s*(?P<value>[+-]\s*\d.*)")
_TRUE = frozenset({"1", "true", "on", "yes"})
_FALSE = frozenset({"0", "false", "off", "no"})


def unescape(text: str) -> bytes:
    r"""Config text to bytes: `\r \n \t \0 \e \\ \xHH` escapes; other characters as Latin-1."""
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt == "x" and re.fullmatch(r"[0-9A-Fa-f]{2}", text[i + 2:i + 4]):
                out.append(chr(int(text[i + 2:i + 4], 16)))
                i += 4
                continue
            raise ValueError(f"unknown escape \\{nxt} at character {i + 1}; use \\r \\n \\t "
                             "\\0 \\e \\\\ or \\xHH")
        if ord(ch) > 0xFF:
            raise ValueError(f"character {ch!r} is not a single byte; write it as \\xHH bytes")
        out.append(ch)
        i += 1
    return "".join(out).encode("latin-1")


def from_hex(text: str) -> bytes:
    """'1B 52 0D' or '1b520d' to bytes; raises ValueError."""
    digits = re.sub(r"[\s:,-]", "", text)
    if not digits or not re.fullmatch(r"([0-9A-Fa-f]{2})+", digits):
        raise ValueError(f"{text!r} is not hex bytes (write pairs of hex digits, e.g. '1B 52')")
    return bytes.fromhex(digits)


def safe(data: bytes, limit: int = SAMPLE) -> str:
    """Bytes for a log line or a terminal: printable ASCII as is, the rest escaped, cut."""
    shown = data[:limit]
    text = "".join(
        chr(b) if 0x20 <= b < 0x7F and b != 0x5C else
        {0x0D: "\\r", 0x0A: "\\n", 0x09: "\\t", 0x5C: "\\\\"}.get(b, f"\\x{b:02x}")
        for b in shown)
    return text + (f"...(+{len(data) - limit} bytes)" if len(data) > limit else "")


@dataclass(frozen=True, slots=True)
class Event:
    """What the framer found: a `frame`, or bytes lost as `too_long`, `partial` or `junk`."""

    kind: Literal["frame", "too_long", "partial", "junk"]
    data: bytes
    """The frame (markers removed), or the first `SAMPLE` bytes of what was lost."""


class Framer:
    """Cuts a byte stream into frames; feed it bytes as they come, in any pieces.

    Without `start`, a frame is the bytes before each `terminator`, CR and LF stripped from
    both ends (so `\\n` framing takes CRLF and LFCR lines too), blank lines skipped. With
    `start`, a frame is the bytes between `start` and `terminator`; bytes outside frames are
    `junk` (CR/LF/space alone are not), and a `start` before the terminator drops the frame
    begun so far as `partial`. A frame longer than `max_length` is dropped as `too_long`
    up to its terminator: memory and parsing time stay bounded whatever the line sends.
    The events do not depend on how the stream was cut into pieces.
    """

    def __init__(self, terminator: bytes = b"\n", start: bytes | None = None,
                 max_length: int = 256) -> None:
        if not terminator or start == b"" or start == terminator or max_length < 1:
            raise ValueError("framing needs a terminator, a different start (or none), and a "
                             "positive max_length")
        self.terminator, self.start, self.max_length = terminator, start, max_length
        self._buf = b""
        self._inside = start is None  # within a frame (always, in line mode)
        self._discard = False  # dropping the rest of a too-long frame
        self._junk = b""
        self._junk_size = 0
        self._junk_real = False  # junk that is not just blank bytes between frames

    @property
    def pending(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._buf) if self._inside else 0

    @property
    def held(self) -> bytes:
        """The start of the frame in progress (a reply without its terminator, for messages)."""
        return self._buf[:SAMPLE] if self._inside else b""

    def reset(self) -> list[Event]:
        """Forget the frame in progress (the port was reopened); what was lost, as events."""
        lost: list[Event] = []
        if self._inside and self._buf.strip(b"\r\n") and not self._discard:
            lost.append(Event("partial", self._buf[:SAMPLE]))
        lost += self._flush_junk()
        self._buf, self._inside, self._discard = b"", self.start is None, False
        return lost

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        self._buf += data
        cut = min(SAMPLE, self.max_length + 1)
        while True:
            if not self._inside:
                assert self.start is not None
                at = self._buf.find(self.start)
                if at < 0:  # keep what could be the beginning of a start marker
                    keep = len(self._buf) - (len(self.start) - 1)
                    if keep > 0:
                        self._add_junk(self._buf[:keep])
                        self._buf = self._buf[keep:]
                    return events
                self._add_junk(self._buf[:at])
                events += self._flush_junk()
                self._buf = self._buf[at + len(self.start):]
                self._inside = True
            end = self._buf.find(self.terminator)
            again = self._buf.find(self.start) if self.start is not None else -1
            if again >= 0 and (end < 0 or again < end):
                if not self._discard:
                    kind: Literal["too_long", "partial"] = (
                        "too_long" if again > self.max_length else "partial")
                    events.append(Event(kind, self._buf[:min(again, cut)]))
                self._buf, self._inside, self._discard = self._buf[again:], False, False
                continue
            if end < 0:
                if len(self._buf) >= self.max_length + len(self.terminator):
                    if not self._discard:
                        events.append(Event("too_long", self._buf[:cut]))
                        self._discard = True
                    keep = max(len(self.terminator), len(self.start or b"")) - 1
                    self._buf = self._buf[len(self._buf) - keep:] if keep else b""
                return events
            frame, self._buf = self._buf[:end], self._buf[end + len(self.terminator):]
            self._inside = self.start is None
            if self._discard:
                self._discard = False
            elif len(frame) > self.max_length:
                events.append(Event("too_long", frame[:cut]))
            elif self.start is not None or (frame := frame.strip(b"\r\n")):
                events.append(Event("frame", frame))

    def _add_junk(self, data: bytes) -> None:
        if self._junk_size < SAMPLE:
            self._junk += data[:SAMPLE - self._junk_size]
        self._junk_size += len(data)
        self._junk_real = self._junk_real or bool(data.strip(b"\r\n \t\0"))

    def _flush_junk(self) -> list[Event]:
        real, junk = self._junk_real, self._junk
        self._junk, self._junk_size, self._junk_real = b"", 0, False
        return [Event("junk", junk)] if real else []


def checksum(kind: ChecksumType, data: bytes) -> int:
    """XOR of the bytes (NMEA), their sum mod 256, its two's complement (LRC), or CRC-16/Modbus."""
    if kind == "xor":
        value = 0
        for b in data:
            value ^= b
        return value
    if kind == "sum":
        return sum(data) & 0xFF
    if kind == "lrc":
        return (-sum(data)) & 0xFF
    return crc16(data)


@dataclass(frozen=True, slots=True)
class ChecksumSpec:
    """Where a frame's checksum is: at its end (after `separator` if set), covering the
    bytes from `skip` up to the separator (or the checksum); as hex digits or raw bytes
    (CRC-16 raw bytes low byte first, as Modbus sends them)."""

    type: ChecksumType
    separator: bytes | None = None
    skip: int = 0
    encoding: Literal["hex", "binary"] = "hex"

    @property
    def width(self) -> int:
        size = 2 if self.type == "crc16" else 1
        return size * 2 if self.encoding == "hex" else size


def verify(spec: ChecksumSpec, frame: bytes) -> tuple[bytes, str | None]:
    """(the frame without its checksum, None) or (frame, why the check failed)."""
    if spec.separator is not None:
        at = frame.rfind(spec.separator)
        if at < 0:
            return frame, f"no checksum separator {safe(spec.separator)!r}"
        payload, given = frame[:at], frame[at + len(spec.separator):]
    else:
        payload, given = frame[:-spec.width], frame[-spec.width:]
    if len(given) != spec.width or len(payload) < spec.skip:
        return frame, "no checksum where expected"
    if spec.encoding == "hex":
        try:
            got = int(given.decode("ascii"), 16)
        except ValueError:
            return frame, f"checksum {safe(given)!r} is not hex"
        if not given.isalnum():
            return frame, f"checksum {safe(given)!r} is not hex"
    else:
        got = int.from_bytes(given, "little")
    want = checksum(spec.type, payload[spec.skip:])
    if got != want:
        digits = spec.width if spec.encoding == "hex" else spec.width * 2
        return frame, f"checksum {got:0{digits}X} != computed {want:0{digits}X}"
    return payload, None


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One configured field: where it is in a frame (group name, key or index) and its type."""

    name: str
    select: str | int
    type: FieldType = "float"
    scale: float = 1.0
    offset: float = 0.0
    base: int = 10


def _decimals(text: str) -> int:
    mantissa, _, exp = text.lower().partition("e")
    places = len(mantissa.partition(".")[2])
    return max(0, places - int(exp)) if exp else places


def _number_decimals(x: float) -> int:
    return _decimals(repr(float(x)).removesuffix(".0")) if x != int(x) else 0


def convert(spec: FieldSpec, text: str) -> tuple[Value, str]:
    """(value, quality) of one field's text: `raw * scale + offset`, decimals kept tidy."""
    raw = text.strip()
    if spec.type == "string":
        return raw, GOOD
    if spec.type == "bool":
        word = raw.lower()
        return (True, GOOD) if word in _TRUE else (False, GOOD) if word in _FALSE else (
            None, "decode_error")
    number: int | float
    if spec.type == "int":
        digits = raw.removeprefix("+")
        if spec.base == 16:
            digits = re.sub(r"^(-?)0[xX]", r"\1", digits)
        if not re.fullmatch(r"-?[0-9A-Fa-f]+" if spec.base == 16 else r"-?\d+", digits):
            return None, "decode_error"
        number = int(digits, spec.base)
        if abs(number) >= 2**63:  # beyond what the platform's integers hold
            return None, "decode_error"
        places = 0
    else:
        if not _NUMBER.fullmatch(raw):
            return None, "decode_error"
        number = float(raw)
        places = _decimals(raw.lstrip("+-"))
    if spec.scale == 1.0 and spec.offset == 0.0:
        value: int | float = number
    else:
        value = number * spec.scale + spec.offset
        if isinstance(value, float) and math.isfinite(value):
            value = round(value, min(places + _number_decimals(spec.scale)
                                     + _number_decimals(spec.offset), 12))
    if isinstance(value, float) and not math.isfinite(value):
        return None, "not_finite"
    return value, GOOD


@dataclass(frozen=True, slots=True)
class FieldResult:
    """One field of one frame: its text as sent (None: not in the frame) and its value."""

    spec: FieldSpec
    text: str | None
    value: Value
    quality: str


@dataclass(frozen=True, slots=True)
class Parsed:
    """A frame's outcome: `kind` is good, ignored (not `select`ed), checksum_error, no_match."""

    kind: str
    frame: bytes
    fields: list[FieldResult] = field(default_factory=list)
    detail: str = ""

    @property
    def good(self) -> bool:
        return self.kind == GOOD


class LineParser:
    """A frame -> the configured fields, by regex groups, key=value pairs or positions."""

    def __init__(self, fmt: Format, fields: Sequence[FieldSpec], *,
                 pattern: str | None = None, separator: str = ",", key_separator: str = "=",
                 select: str | None = None, checksum: ChecksumSpec | None = None) -> None:
        self.format, self.fields, self.checksum = fmt, list(fields), checksum
        self.pattern = compile_pattern(pattern) if pattern is not None else None
        self.select = compile_pattern(select) if select is not None else None
        self.separator, self.key_separator = separator, key_separator
        if fmt == "regex" and (self.pattern is None or not self.pattern.groupindex):
            raise ValueError("format regex needs a pattern with named groups, e.g. "
                             "'T=(?P<temp>[-0-9.]+)'")
        if not separator or not key_separator:
            raise ValueError("separators must not be empty")

    def parse(self, frame: bytes) -> Parsed:
        payload = frame
        if self.checksum is not None:
            payload, why = verify(self.checksum, frame)
            if why is not None:
                return Parsed("checksum_error", frame, detail=why)
        text = payload.decode("latin-1")
        if self.select is not None and not self.select.search(text):
            return Parsed("ignored", frame)
        found = self.extract(text)
        results = []
        for spec in self.fields:
            raw = found.get(spec.select)
            if raw is None:
                results.append(FieldResult(spec, None, None, "missing"))
            else:
                results.append(FieldResult(spec, raw, *convert(spec, raw)))
        if all(r.text is None for r in results):
            what = {"regex": "the pattern does not match", "pairs": "no configured key",
                    "fields": "too few fields"}[self.format]
            return Parsed("no_match", frame, results, what)
        return Parsed(GOOD, frame, results)

    def extract(self, text: str) -> dict[str | int, str]:
        """Every value in the text by its selector: group name, key, or position."""
        if self.format == "regex":
            assert self.pattern is not None
            match = self.pattern.search(text)
            if match is None:
                return {}
            return {k: v for k, v in match.groupdict().items() if v is not None}
        parts = text.split() if self.separator == " " else text.split(self.separator)
        pairs: dict[str | int, str] = {}
        if self.format == "fields":
            for i, part in enumerate(parts):
                pairs[i] = pairs[i - len(parts)] = part
            return pairs
        for part in parts:
            key, sep, value = part.partition(self.key_separator)
            if not sep:
                signed = _SIGNED.fullmatch(part.strip())  # IN+1, OUT-2: a key and a signed count
                if signed is None:
                    continue
                key, value = signed["key"], signed["value"].replace(" ", "")
            if key.strip():
                pairs[key.strip()] = value.strip()
        return pairs
