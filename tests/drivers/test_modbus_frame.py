"""Tests for drivers.modbus_frame: known wire bytes, pymodbus agreement, damaged frames."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.framer import FramerAscii, FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest

from agent.core.errors import DeviceTimeout
from drivers.modbus.frame import (
    FrameError,
    ModbusExceptionReply,
    crc16,
    frame,
    lrc,
    parse_read,
    read_ascii,
    read_mbap,
    read_pdu,
    read_rtu,
)


def reader(data: bytes):  # type: ignore[no-untyped-def]
    buf = bytearray(data)

    def recv(n: int) -> bytes:
        if len(buf) < n:
            raise DeviceTimeout("short")
        out = bytes(buf[:n])
        del buf[:n]
        return out

    return recv


def test_known_rtu_request() -> None:
    # The classic example: unit 1, read 10 holding registers from 0 -> CRC C5 CD.
    assert frame("rtu", 1, read_pdu(3, 0, 10)) == bytes.fromhex("01030000000AC5CD")


def test_known_ascii_request() -> None:
    assert frame("ascii", 1, read_pdu(3, 0, 10)) == b":01030000000AF2\r\n"
    assert lrc(bytes.fromhex("01030000000A")) == 0xF2


@given(unit=st.integers(1, 247), address=st.integers(0, 65535), count=st.integers(1, 125))
def test_frames_match_pymodbus(unit: int, address: int, count: int) -> None:
    request = ReadHoldingRegistersRequest(address=address, count=count, dev_id=unit)
    for framing, framer in (("rtu", FramerRTU), ("ascii", FramerAscii)):
        theirs = framer(DecodePDU(is_server=False)).buildFrame(request)
        assert frame(framing, unit, read_pdu(3, address, count)) == theirs


def rtu_reply(unit: int, pdu: bytes) -> bytes:
    body = bytes([unit]) + pdu
    return body + crc16(body).to_bytes(2, "little")


def test_rtu_reply_round_trip_and_damage() -> None:
    pdu = bytes([3, 4, 0x12, 0x34, 0xAB, 0xCD])
    assert read_rtu(reader(rtu_reply(7, pdu)), 7, 3) == pdu
    assert parse_read(pdu, 3, 2) == [0x1234, 0xABCD]
    damaged = bytearray(rtu_reply(7, pdu))
    damaged[4] ^= 0x01
    with pytest.raises(FrameError, match="CRC"):
        read_rtu(reader(bytes(damaged)), 7, 3)
    with pytest.raises(FrameError, match="waiting for unit 8"):
        read_rtu(reader(rtu_reply(7, pdu)), 8, 3)
    with pytest.raises(DeviceTimeout):
        read_rtu(reader(rtu_reply(7, pdu)[:5]), 7, 3)


def test_exception_replies_name_their_quality() -> None:
    pdu = read_rtu(reader(rtu_reply(1, bytes([0x83, 0x02]))), 1, 3)
    with pytest.raises(ModbusExceptionReply) as err:
        parse_read(pdu, 3, 1)
    assert err.value.code == 2 and err.value.quality == "illegal_address"
    assert "illegal data address" in str(err.value)
    with pytest.raises(ModbusExceptionReply) as busy:
        parse_read(bytes([0x84, 0x06]), 4, 1)
    assert busy.value.quality == "device_busy"


def test_ascii_reply_and_lrc_error() -> None:
    adu = bytes([2, 3, 2, 0, 42])
    line = b":" + (adu + bytes([lrc(adu)])).hex().upper().encode() + b"\r\n"
    assert read_ascii(lambda: line, 2) == adu[1:]
    bad = line.replace(b"2A", b"2B")
    with pytest.raises(FrameError, match="LRC"):
        read_ascii(lambda: bad, 2)


def test_mbap_skips_stale_transactions() -> None:
    stale = bytes.fromhex("0001 0000 0005 01 03 02 0001".replace(" ", ""))
    fresh = bytes.fromhex("0002 0000 0005 01 03 02 0002".replace(" ", ""))
    recv = reader(stale + fresh)
    assert read_mbap(recv, 2, 1) is None
    assert read_mbap(recv, 2, 1) == bytes([3, 2, 0, 2])


def test_mbap_reply_from_another_unit_is_damaged_not_a_value() -> None:
    other = bytes.fromhex("0002 0000 0005 02 03 02 0002".replace(" ", ""))
    with pytest.raises(FrameError, match="reply from unit 2 while waiting for unit 1"):
        read_mbap(reader(other), 2, 1)
    odd = bytes.fromhex("0002 0001 0005 01 03 02 0002".replace(" ", ""))
    with pytest.raises(FrameError, match="malformed MBAP header \\(protocol 1"):
        read_mbap(reader(odd), 2, 1)


def test_bits_are_unpacked_lsb_first() -> None:
    assert parse_read(bytes([1, 2, 0b00000101, 0b1]), 1, 9) == [
        True, False, True, False, False, False, False, False, True]
    with pytest.raises(FrameError):
        parse_read(bytes([3, 4, 0, 1]), 3, 2)  # byte count says 4, carries 2
