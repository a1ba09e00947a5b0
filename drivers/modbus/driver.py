"""What the three Modbus drivers share: the point model, the device keys, and the poll itself.

This module owns `ModbusPoint` (table, address, type, byte order, bit, scale/offset),
`ModbusDeviceConfig` (unit, default byte order, read-planning limits), and `ModbusDriver`:
it plans the reads once (`modbus_plan`), runs each request as one transaction on the port the
core lent it (`modbus_frame` bytes; a "busy" reply is retried, a damaged reply read again
once), splits a request the device refuses as "illegal data address" and keeps the plan that
works, and decodes registers into readings (`modbus_codec`). A request that times out ends the
poll (the device is silent: the core backs off); an exception reply only spoils the points of
that request. `read` (one planned read, as `poll` runs it) and `read_once` (one transaction,
nothing retried) are public for `probe` and `scan`. `modbus_tcp`, `modbus_rtu` and
`modbus_ascii` differ in framing and port only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal, Self

from pydantic import Field, model_validator

from agent.core import log
from agent.core.errors import DeviceTimeout
from agent.core.model import Reading, Value, now_ms
from agent.transport.ports import Port
from drivers.base import DeviceConfig, PointConfig
from drivers.modbus.codec import ByteOrder, PointType, decode, register_count, shortest_float32
from drivers.modbus.frame import (
    FUNCTION,
    FrameError,
    Framing,
    ModbusExceptionReply,
    frame,
    parse_read,
    read_ascii,
    read_mbap,
    read_pdu,
    read_rtu,
)
from drivers.modbus.plan import MAX_BITS, MAX_REGISTERS, Request, Span, plan, split

Table = Literal["coil", "discrete", "holding", "input"]
BUSY_RETRIES = 2
"""Extra attempts at a request answered "device busy", `timeout / 4` apart."""
GATEWAY_CODES = (10, 11)
"""Exception replies that mean the device itself is unreachable behind a gateway."""


class ModbusPoint(PointConfig):
    """One value read from a Modbus table, decoded, then `value * scale + offset`."""

    table: Table = "holding"
    address: int = Field(ge=0, le=65535, description="0-based register or bit address")
    type: PointType = "uint16"
    length: int | None = Field(
        default=None, ge=1, le=125, description="registers, for type string only"
    )
    bit: int | None = Field(
        default=None, ge=0, le=15, description="for type bool on holding/input: bit 0 (LSB)..15"
    )
    byte_order: ByteOrder | None = Field(
        default=None, description="overrides the device's byte_order for this point"
    )
    scale: float = 1.0
    offset: float = 0.0

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        bit_table = self.table in ("coil", "discrete")
        if bit_table and self.type != "bool":
            raise ValueError(f"table {self.table} holds bits: type must be bool, not {self.type}")
        if not bit_table and self.type == "bool" and self.bit is None:
            raise ValueError(f"type bool on table {self.table} needs `bit` (0..15) to pick one "
                             "bit of the register; or use table coil or discrete")
        if self.bit is not None and (bit_table or self.type != "bool"):
            raise ValueError("`bit` is only for type bool on holding/input registers")
        if self.type == "string" and self.length is None:
            raise ValueError("type string needs `length` (number of registers)")
        if self.type != "string" and self.length is not None:
            raise ValueError("`length` is only for type string")
        end = self.address + self.width - 1
        if end > 65535:
            raise ValueError(f"point ends at address {end}, past the last address 65535")
        return self

    @property
    def width(self) -> int:
        """Registers (or bits) the point occupies."""
        return 1 if self.type == "bool" else register_count(self.type, self.length)


class ModbusDeviceConfig(DeviceConfig):
    """Keys of every Modbus device, whatever its transport."""

    byte_order: ByteOrder = Field(
        default="ABCD", description="default for multi-register points: ABCD, CDAB, BADC, DCBA"
    )
    profile: str | None = Field(
        default=None, description="points from config/profiles/NAME.yaml (merged at load)")
    max_gap: int = Field(default=16, ge=0, le=124,
                         description="unused registers a merged read may span between points")
    max_registers_per_read: int = Field(default=MAX_REGISTERS, ge=1, le=125)
    max_bits_per_read: int = Field(default=MAX_BITS, ge=1, le=2000)
    points: list[ModbusPoint] = Field(min_length=1)


def _decimals(x: float) -> int:
    """Decimal places of a configured scale/offset as written (0.01 -> 2)."""
    text = repr(float(x))
    if "e" in text:
        return 12
    return len(text.split(".")[1].rstrip("0"))


def scaled(raw: int | float, scale: float, offset: float) -> int | float:
    """`raw * scale + offset`; integers scaled by decimal factors keep their exact decimals."""
    if scale == 1.0 and offset == 0.0:
        return raw
    value = raw * scale + offset
    if isinstance(raw, int):
        return round(value, _decimals(scale) + _decimals(offset))
    return value


def point_value(p: ModbusPoint, data: Sequence[int] | Sequence[bool], order: str
                ) -> tuple[Value, str]:
    """(value, quality) of one point from its own registers or bits."""
    if p.table in ("coil", "discrete"):
        return bool(data[0]), "good"
    if p.bit is not None:
        return bool(int(data[0]) >> p.bit & 1), "good"
    try:
        decoded = decode([int(r) for r in data], p.type, p.byte_order or order, p.length)
    except ValueError:
        return None, "decode_error"
    if isinstance(decoded, str):
        return decoded, "good"
    if p.type == "float32" and isinstance(decoded, float):
        decoded = shortest_float32(decoded)
    value = scaled(decoded, p.scale, p.offset)
    if isinstance(value, float) and not math.isfinite(value):
        return None, "not_finite"
    return value, "good"


@dataclass
class Transaction:
    """What one request put on the wire and got back, for `probe`."""

    request: Request
    data: list[int] | list[bool] | None
    error: str | None = None


class ModbusDriver:
    """One Modbus unit on a port the core owns; reads planned, refused reads split."""

    config_model: ClassVar[type[ModbusDeviceConfig]] = ModbusDeviceConfig
    framing: Framing = "mbap"

    def __init__(self, config: ModbusDeviceConfig, port: Port, unit: int, timeout: float,
                 bus: str | None = None) -> None:
        self.config = config
        self.bus = bus
        self.port = port
        self.unit = unit
        self.timeout = timeout
        c = config
        self.spans = [Span(p.table, p.address, p.width) for p in c.points]
        self.plan = plan(self.spans, c.max_gap, c.max_registers_per_read, c.max_bits_per_read)
        self.requests = 0
        self.trace: list[Transaction] | None = None  # set to a list to record (probe)
        self._tid = 0
        self._log = log.get("plan", c.name)

    def metrics(self) -> list[tuple[str, str | None]]:
        return [(p.name, p.unit) for p in self.config.points]

    def open(self) -> None:
        """Nothing to do: the port opens on the first request."""

    def close(self) -> None:
        """Private ports (TCP) are closed; a shared bus stays open for its other devices."""
        if self.bus is None:
            with self.port.lock:
                self.port.close()

    def poll(self) -> list[Reading]:
        ts = now_ms()
        results: dict[int, tuple[Value, str]] = {}
        kept: list[Request] = []
        for request in self.plan:
            kept += self._run(request, results)
        if kept != self.plan:
            self._log.info("read plan adjusted", requests_before=len(self.plan),
                           requests_now=len(kept),
                           split=[r.describe() for r in self.plan if r not in kept])
            self.plan = kept
        c = self.config
        return [Reading(c.name, p.name, results[i][0], p.unit, ts, results[i][1])
                for i, p in enumerate(c.points)]

    def _run(self, request: Request, results: dict[int, tuple[Value, str]]) -> list[Request]:
        """Read one planned request into `results`; the request(s) that should stay planned."""
        try:
            data = self.read(request)
        except ModbusExceptionReply as exc:
            if exc.code in GATEWAY_CODES:
                raise
            if exc.code == 2 and (halves := split(request, self.spans)) is not None:
                return self._run(halves[0], results) + self._run(halves[1], results)
            for i in request.points:
                results[i] = (None, exc.quality)
            return [request]
        order = self.config.byte_order
        for i, own in self.points_in(request, data):
            results[i] = point_value(self.config.points[i], own, order)
        return [request]

    def points_in(self, request: Request, data: list[int] | list[bool]
                  ) -> list[tuple[int, list[int] | list[bool]]]:
        """(point index, that point's own registers or bits) for each point `request` serves,
        out of what the request read."""
        out: list[tuple[int, list[int] | list[bool]]] = []
        for i in request.points:
            s = self.spans[i]
            offset = s.address - request.address
            out.append((i, data[offset:offset + s.count]))
        return out

    def read(self, request: Request) -> list[int] | list[bool]:
        """One planned read, as `poll()` runs each request of the plan: registers or bits, with
        "busy" retried and a damaged reply read again once. Raises `ModbusExceptionReply`,
        `FrameError` or `DeviceTimeout` (the last two naming the unit)."""
        busy, damaged = 0, 0
        while True:
            try:
                return self.read_once(request)
            except ModbusExceptionReply as exc:
                if exc.code in (5, 6) and busy < BUSY_RETRIES:
                    busy += 1
                    time.sleep(self.timeout / 4)  # give the device time; protocol, not sync
                    continue
                raise
            except FrameError as exc:
                if damaged < 1:
                    damaged += 1
                    continue
                raise FrameError(f"unit {self.unit} on {self.port.name}: {exc}") from None
            except DeviceTimeout as exc:
                raise DeviceTimeout(f"unit {self.unit}: {exc}") from None

    def read_once(self, request: Request) -> list[int] | list[bool]:
        """One transaction of `request`, nothing retried: its registers or bits. Raises what the
        wire said: `ModbusExceptionReply`, `FrameError` (`UnexpectedReply` for a well-framed
        reply that does not answer the request), `DeviceTimeout`. Recorded in `trace`."""
        fc = FUNCTION[request.table]
        try:
            pdu = self._transact(read_pdu(fc, request.address, request.count), fc)
            data = parse_read(pdu, fc, request.count)
        except (ModbusExceptionReply, FrameError) as exc:
            self._record(request, None, exc.quality)
            raise
        except DeviceTimeout:
            self._record(request, None, "timeout")
            raise
        self._record(request, data, None)
        return data

    def _record(self, request: Request, data: list[int] | list[bool] | None,
                error: str | None) -> None:
        if self.trace is not None:
            self.trace.append(Transaction(request, data, error))

    def _transact(self, pdu: bytes, fc: int) -> bytes:
        """Send one request and return the reply PDU; the port is held for the whole exchange."""
        port, unit = self.port, self.unit
        with port.lock:
            self.requests += 1
            port.discard_input()
            self._tid = (self._tid + 1) & 0xFFFF
            try:
                port.send(frame(self.framing, unit, pdu, self._tid))
                deadline = time.monotonic() + self.timeout
                if self.framing == "rtu":
                    return read_rtu(lambda n: port.recv(n, deadline), unit, fc)
                if self.framing == "ascii":
                    return read_ascii(lambda: port.recv_line(deadline), unit)
                while (reply := read_mbap(lambda n: port.recv(n, deadline), self._tid,
                                          unit)) is None:
                    pass  # a stale reply to an earlier, timed-out request
                return reply
            except (DeviceTimeout, FrameError):
                if self.framing == "mbap":
                    port.close()  # the stream may be out of step: reconnect next time
                else:
                    port.discard_input()
                raise
