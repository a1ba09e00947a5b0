"""The pure text-protocol logic: escapes, framing, checksums, parsing; property-tested with
hypothesis (never raises on arbitrary bytes; framing does not depend on how bytes arrive; the
driver turns any bytes into readings the platform can take)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.transport.ports import BusConfig, open_port
from drivers.registry import create
from drivers.serial_line.driver import SerialLine, SerialLineConfig
from drivers.serial_line.parse import (
    ChecksumSpec,
    Event,
    FieldSpec,
    Framer,
    LineParser,
    checksum,
    convert,
    from_hex,
    safe,
    unescape,
    verify,
)

NMEA = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"


def test_escapes_hex_and_safe_samples() -> None:
    assert unescape("READ\\r\\n") == b"READ\r\n"
    assert unescape("\x02A\\x03\\\\") == b"\x02A\x03\\"
    assert unescape("real\r\n") == b"real\r\n"  # YAML already turned "\r\n" into bytes
    for bad in ("\\q", "\\x4", "\u2113"):
        with pytest.raises(ValueError):
            unescape(bad)
    assert from_hex("1B 52 0d") == b"\x1bR\r"
    with pytest.raises(ValueError):
        from_hex("1B5")
    assert safe(b"PM\xff\r\n\\x") == "PM\\xff\\r\\n\\\\x"
    assert safe(b"a" * 70, 4) == "aaaa...(+66 bytes)"


def frames(events: list[Event]) -> list[bytes]:
    return [e.data for e in events if e.kind == "frame"]


def test_line_framing() -> None:
    f = Framer(b"\n", max_length=10)
    assert frames(f.feed(b"A=1\r\n\r\nB=2\n\rC=")) == [b"A=1", b"B=2"]  # CRLF, LFCR, blank
    assert f.held == b"\rC=" and f.pending == 3
    assert f.feed(b"3\n") == [Event("frame", b"C=3")]
    assert f.feed(b"0123456789ABCDEF\nD=4\n") == [Event("too_long", b"0123456789A"),
                                                   Event("frame", b"D=4")]
    assert f.feed(b"x" * 30) == [Event("too_long", b"x" * 11)]  # once, memory stays bounded
    assert f.pending <= 11
    assert f.feed(b"x" * 30 + b"\nE=5\n") == [Event("frame", b"E=5")]
    assert f.feed(b"half") == [] and f.reset() == [Event("partial", b"half")]
    crlf = Framer(b"\r\n", max_length=4)  # a frame of exactly max_length, terminator cut
    assert crlf.feed(b"xxxx\r") == [] and crlf.feed(b"\n") == [Event("frame", b"xxxx")]
    etx = Framer(b"ETX", b"STX", max_length=4)
    assert etx.feed(b"STXxxxxET") == [] and etx.feed(b"X") == [Event("frame", b"xxxx")]


def test_start_end_framing() -> None:
    f = Framer(b"\x03", b"\x02", max_length=20)
    assert f.feed(b"noise\x02T=1\x03\r\n\x02T=") == [Event("junk", b"noise"),
                                                      Event("frame", b"T=1")]
    assert f.feed(b"2\x02T=3\x03") == [Event("partial", b"T=2"), Event("frame", b"T=3")]
    assert f.feed(b"\r\n \x02\x03") == [Event("frame", b"")]  # blank between frames: not junk


def test_checksums_known_values() -> None:
    assert checksum("crc16", b"123456789") == 0x4B37  # CRC-16/MODBUS check value
    assert checksum("xor", NMEA[1:-3]) == 0x47
    assert checksum("sum", b"\xff\x02") == 0x01
    assert checksum("lrc", b"\x01\x03") == 0xFC
    nmea = ChecksumSpec("xor", b"*", skip=1)
    assert verify(nmea, NMEA) == (NMEA[:-3], None)
    assert verify(nmea, NMEA[:-1] + b"8")[1] == "checksum 48 != computed 47"
    assert verify(nmea, NMEA[:-3])[1] == "no checksum separator '*'"
    assert verify(nmea, NMEA[:-2] + b"ZZ")[1] == "checksum 'ZZ' is not hex"
    raw = ChecksumSpec("crc16", encoding="binary")
    assert verify(raw, b"123456789\x37\x4b") == (b"123456789", None)  # low byte first


@settings(deadline=None)  # a loaded CI machine must not turn slowness into a failure
@given(st.binary(max_size=80), st.sampled_from(["xor", "sum", "lrc", "crc16"]),
       st.sampled_from(["hex", "binary"]), st.integers(0, 79), st.integers(1, 255))
def test_checksum_round_trip_and_single_byte_damage(
        data: bytes, kind: str, encoding: str, at: int, flip: int) -> None:
    spec = ChecksumSpec(kind, None, 0, encoding)  # type: ignore[arg-type]
    value = checksum(spec.type, data)
    digits = spec.width
    tail = (f"{value:0{digits}X}".encode() if encoding == "hex"
            else value.to_bytes(spec.width, "little"))
    assert verify(spec, data + tail) == (data, None)
    if data and kind in ("xor", "crc16", "sum", "lrc"):
        damaged = bytearray(data)
        damaged[at % len(data)] ^= flip
        assert verify(spec, bytes(damaged) + tail)[1] is not None


def test_convert_types_scale_and_bad_text() -> None:
    f = FieldSpec("t", "t")
    assert convert(f, " 12.30 ") == (12.3, "good")
    assert convert(FieldSpec("t", "t", scale=0.1), "123") == (12.3, "good")
    assert convert(FieldSpec("t", "t", scale=0.1, offset=-40), "523") == (12.3, "good")
    assert convert(FieldSpec("n", "n", type="int"), "+7") == (7, "good")
    assert convert(FieldSpec("n", "n", type="int", base=16), "0x1F") == (31, "good")
    assert convert(FieldSpec("b", "b", type="bool"), "ON") == (True, "good")
    assert convert(FieldSpec("s", "s", type="string"), " OK ") == ("OK", "good")
    for text in ("--.-", "nan", "inf", "1_0", "", "12,3"):
        assert convert(f, text) == (None, "decode_error"), text
    assert convert(f, "1e999") == (None, "not_finite")
    assert convert(FieldSpec("b", "b", type="bool"), "maybe") == (None, "decode_error")


def parsers() -> list[LineParser]:
    specs = [FieldSpec("pm25", "PM2.5"), FieldSpec("pm10", "PM10"), FieldSpec("inc", "IN",
                                                                               type="int")]
    return [
        LineParser("pairs", specs),
        LineParser("pairs", specs, separator=" ", key_separator=":"),
        LineParser("regex", [FieldSpec("temp", "temp"), FieldSpec("rh", "rh")],
                   pattern=r"T=(?P<temp>\S+) H=(?P<rh>\S+)?"),
        LineParser("fields", [FieldSpec("dir", 1, type="int"), FieldSpec("speed", 3),
                              FieldSpec("status", -1, type="string")],
                   select=r"^\$WIMWV", checksum=ChecksumSpec("xor", b"*", skip=1)),
    ]


def test_parsers() -> None:
    pairs, spaced, regex, fields = parsers()
    got = pairs.parse(b"PM2.5=12.3, PM10 = 20.1,FOO=1")
    assert got.good and [(r.spec.name, r.text, r.value) for r in got.fields] == [
        ("pm25", "12.3", 12.3), ("pm10", "20.1", 20.1), ("inc", None, None)]
    assert [r.value for r in pairs.parse(b"IN+1").fields] == [None, None, 1]
    assert [r.value for r in pairs.parse(b"IN -2").fields] == [None, None, -2]
    assert pairs.parse(b"HELLO").kind == "no_match"
    assert [r.value for r in spaced.parse(b"PM2.5:3  PM10:4").fields][:2] == [3.0, 4.0]
    got = regex.parse(b"T=21.5 H=")
    assert [(r.value, r.quality) for r in got.fields] == [(21.5, "good"), (None, "missing")]
    assert regex.parse(b"X=1").kind == "no_match"
    mwv = b"$WIMWV,270,R,5.2,M,A*"
    line = mwv + f"{checksum('xor', mwv[1:-1]):02X}".encode()
    assert [r.value for r in fields.parse(line).fields] == [270, 5.2, "A"]
    assert fields.parse(b"$WIXDR,C,21.5,C,0*7A").kind in ("ignored", "checksum_error")
    assert fields.parse(line[:-1] + b"0").kind == "checksum_error"
    other = b"$WIXDR,C,1*" + f"{checksum('xor', b'WIXDR,C,1'):02X}".encode()
    assert fields.parse(other).kind == "ignored"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_parsers_never_raise_on_arbitrary_bytes(data: bytes) -> None:
    for parser in parsers():
        parsed = parser.parse(data)
        assert parsed.kind in ("good", "ignored", "checksum_error", "no_match")
        for r in parsed.fields:
            assert (r.quality == "good") == (r.value is not None)


markers = st.sampled_from([(b"\n", None), (b"\r\n", None), (b"\x03", b"\x02"),
                           (b"\r", b"$"), (b"ETX", b"STX")])


@settings(max_examples=200, deadline=None)
@given(markers, st.integers(4, 40),
       st.lists(st.one_of(st.binary(max_size=30), st.integers(0, 45).map(lambda n: b"x" * n),
                          st.sampled_from([b"\n", b"\r\n", b"\x02", b"\x03", b"$", b"STX",
                                           b"ETX", b"A=1"])), max_size=30),
       st.data())
def test_framing_does_not_depend_on_how_bytes_arrive(
        marks: tuple[bytes, bytes | None], max_length: int, parts: list[bytes],
        data: st.DataObject) -> None:
    stream = b"".join(parts)
    whole = Framer(marks[0], marks[1], max_length)
    expected = whole.feed(stream)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    pieces = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    chunked = Framer(marks[0], marks[1], max_length)
    got: list[Event] = []
    for piece in pieces:
        got += chunked.feed(piece)
        assert chunked.pending <= max_length + len(marks[0]) + len(marks[1] or b"")
    assert got == expected
    for e in got:
        assert e.kind != "frame" or len(e.data) <= max_length
        assert marks[0] not in e.data or e.kind != "frame"


def _drivers() -> list[SerialLine]:
    ports = {"line": open_port(BusConfig(name="line", port="/dev/null"))}  # never opened
    base = {"name": "d", "driver": "serial_line", "bus": "line", "mode": "stream",
            "max_length": 64}
    configs = [
        base | {"format": "pairs", "points": [
            {"name": "pm25", "key": "PM2.5", "scale": 0.1, "offset": -1},
            {"name": "bay", "key": "B", "type": "bool", "state": True},
            {"name": "count", "key": "IN", "type": "int", "accumulate": True},
            {"name": "flow", "key": "F", "accumulate": True},
            {"name": "hex", "key": "H", "type": "int", "base": 16},
            {"name": "tag", "key": "T", "type": "string"}]},
        base | {"format": "fields", "separator": " ", "start": "$", "terminator": "\\r\\n",
                "frames": "all", "checksum": {"type": "crc16", "encoding": "binary"},
                "points": [{"name": "a", "index": 0}, {"name": "b", "index": -1,
                                                       "type": "int"}]},
    ]
    found = []
    for c in configs:
        driver = create(SerialLineConfig.model_validate(c), ports)
        assert isinstance(driver, SerialLine)
        found.append(driver)
    return found


protocol_bytes = st.lists(st.one_of(
    st.binary(max_size=20),
    st.sampled_from([b"PM2.5=", b"IN+", b"IN-", b"F=", b"B=1", b"H=ff", b"T=x", b"$", b"\r\n",
                     b"\n", b",", b"1e308", b"9" * 30, b"-", b".", b" ", b"nan",
                     b"F=1e308\n", b"IN+9000000000000000000\n"])),
    max_size=40)


@settings(max_examples=150, deadline=None)
@given(st.lists(protocol_bytes, min_size=1, max_size=4))
def test_driver_turns_any_bytes_into_sendable_readings(polls: list[list[bytes]]) -> None:
    for driver in _drivers():
        for n, chunks in enumerate(polls):
            updates: list[Any] = []
            for chunk in chunks:
                driver._frames(driver.framer.feed(chunk), n, updates)  # what a poll does
            for r in driver._readings(updates):
                assert (r.quality == "good") == (r.value is not None), r
                json.dumps(r.value, allow_nan=False)  # the platform gets real JSON numbers
                assert not isinstance(r.value, int) or abs(r.value) < 2**63
