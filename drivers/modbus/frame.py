"""Pure Modbus framing: read requests and their replies as bytes, for TCP (MBAP), RTU and ASCII.

This module owns the bytes on the wire for the four read functions (1 coils, 2 discrete
inputs, 3 holding registers, 4 input registers; `FUNCTION` maps table names to them): building
request PDUs, wrapping them in an MBAP header, an RTU frame (unit + PDU + CRC-16) or an ASCII
frame (':' + hex + LRC + CRLF), reading a reply frame from a byte source that knows nothing
about Modbus (it only hands out exactly `n` bytes or a line, and raises `DeviceTimeout` when
the line stays silent), checking it, and turning a reply PDU into registers or bits. Exception
replies become `ModbusExceptionReply` with the quality word for the code; damaged frames become
`FrameError` (an intact reply that does not answer the request: its subclass
`UnexpectedReply`). No I/O happens here: the caller passes the reading functions.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Callable
from typing import Literal

from agent.core.errors import DriverError

Framing = Literal["mbap", "rtu", "ascii"]
FUNCTION = {"coil": 1, "discrete": 2, "holding": 3, "input": 4}
"""Table -> read function code: the one place a table name becomes a function code."""
MAX_COUNT = {1: 2000, 2: 2000, 3: 125, 4: 125}

EXCEPTION_QUALITY = {
    1: "illegal_function", 2: "illegal_address", 3: "illegal_value", 4: "device_failure",
    5: "acknowledge", 6: "device_busy", 10: "gateway_path_unavailable",
    11: "gateway_target_failed",
}
EXCEPTION_TEXT = {
    1: "illegal function", 2: "illegal data address", 3: "illegal data value",
    4: "device failure", 5: "acknowledge (busy with a long command)", 6: "device busy",
    10: "gateway path unavailable", 11: "gateway target device failed to respond",
}


class ModbusExceptionReply(DriverError):
    """The device answered a request with a Modbus exception `code`."""

    def __init__(self, code: int, what: str = "") -> None:
        self.code = code
        self.quality = EXCEPTION_QUALITY.get(code, f"exception_{code}")
        text = EXCEPTION_TEXT.get(code, "unknown exception")
        super().__init__(f"exception {code} ({text}){' ' + what if what else ''}")


class FrameError(DriverError):
    """A reply arrived but was damaged: bad CRC/LRC, wrong unit or function, bad length."""

    quality = "crc_error"


class UnexpectedReply(FrameError):
    """A reply that arrived intact but does not answer the request: another function code,
    or a byte count that does not match what was asked."""


def read_pdu(fc: int, address: int, count: int) -> bytes:
    """The PDU of a read request: function code, start address, quantity."""
    return struct.pack(">BHH", fc, address, count)


def crc16(data: bytes) -> int:
    """Modbus RTU CRC-16 (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def lrc(data: bytes) -> int:
    """Modbus ASCII LRC: two's complement of the byte sum."""
    return (-sum(data)) & 0xFF


def frame(framing: Framing, unit: int, pdu: bytes, tid: int = 0) -> bytes:
    """One request ready for the wire."""
    adu = bytes([unit]) + pdu
    if framing == "rtu":
        return adu + struct.pack("<H", crc16(adu))
    if framing == "ascii":
        return b":" + binascii.hexlify(adu + bytes([lrc(adu)])).upper() + b"\r\n"
    return struct.pack(">HHH", tid & 0xFFFF, 0, len(adu)) + adu


Recv = Callable[[int], bytes]
"""Returns exactly n bytes, or raises DeviceTimeout."""


def read_rtu(recv: Recv, unit: int, fc: int) -> bytes:
    """Read one RTU reply to a read request from `unit`; returns its PDU (CRC checked)."""
    head = recv(2)
    if head[1] & 0x80:
        rest = recv(3)
    elif head[1] in MAX_COUNT:
        count = recv(1)
        rest = count + recv(count[0] + 2)
    else:
        raise FrameError(f"reply with unexpected function code {head[1]} (asked {fc})")
    adu = head + rest
    if crc16(adu[:-2]) != struct.unpack("<H", adu[-2:])[0]:
        raise FrameError(f"CRC error in reply from unit {head[0]}: {adu.hex(' ')}")
    if head[0] != unit:
        raise FrameError(f"reply from unit {head[0]} while waiting for unit {unit}")
    return adu[1:-2]


def read_ascii(recv_line: Callable[[], bytes], unit: int) -> bytes:
    """Read one ASCII reply line (':' ... CRLF); returns its PDU (LRC checked)."""
    line = recv_line().strip()
    start = line.rfind(b":")
    try:
        adu = binascii.unhexlify(line[start + 1:]) if start >= 0 else b""
    except (binascii.Error, ValueError):
        adu = b""
    if len(adu) < 3:
        raise FrameError(f"malformed ASCII reply {line[:40]!r}")
    if lrc(adu[:-1]) != adu[-1]:
        raise FrameError(f"LRC error in reply from unit {adu[0]}: {line[:40]!r}")
    if adu[0] != unit:
        raise FrameError(f"reply from unit {adu[0]} while waiting for unit {unit}")
    return adu[1:-1]


def read_mbap(recv: Recv, tid: int, unit: int) -> bytes | None:
    """Read one MBAP reply; its PDU, or None if it answers another (stale) transaction.

    A reply is matched on all three ids the header carries: transaction, protocol (0) and
    unit. A reply to this transaction from another unit (a TCP gateway mixing up its serial
    units) is a damaged reply, never a value."""
    got_tid, proto, length = struct.unpack(">HHH", recv(6))
    if proto != 0 or not 2 <= length <= 254:
        raise FrameError(f"malformed MBAP header (protocol {proto}, length {length})")
    body = recv(length)
    if got_tid != tid & 0xFFFF:
        return None
    if body[0] != unit:
        raise FrameError(f"reply from unit {body[0]} while waiting for unit {unit}")
    return body[1:]


def parse_read(pdu: bytes, fc: int, count: int) -> list[int] | list[bool]:
    """Registers (fc 3, 4) or bits (fc 1, 2) from a reply PDU; raises `ModbusExceptionReply` on
    exception replies and `UnexpectedReply` on replies that do not answer function `fc`."""
    if pdu and pdu[0] == fc | 0x80:
        raise ModbusExceptionReply(pdu[1] if len(pdu) > 1 else 0)
    if not pdu or pdu[0] != fc:
        raise UnexpectedReply(f"reply to function {fc} has function {pdu[:1].hex() or 'none'}")
    data = pdu[2:]
    if len(pdu) < 2 or pdu[1] != len(data):
        raise UnexpectedReply(
            f"reply byte count {pdu[1] if len(pdu) > 1 else '?'} != {len(data)}")
    if fc in (1, 2):
        if len(data) != (count + 7) // 8:
            raise UnexpectedReply(f"asked {count} bits, reply carries {len(data)} bytes")
        return [bool(data[i // 8] >> (i % 8) & 1) for i in range(count)]
    if len(data) != 2 * count:
        raise UnexpectedReply(f"asked {count} registers, reply carries {len(data)} bytes")
    return list(struct.unpack(f">{count}H", data))
