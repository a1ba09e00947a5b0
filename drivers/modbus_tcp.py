"""The `modbus_tcp` driver: polls one Modbus TCP device (PLC, analyser, meter) for its points.

It owns the TCP connection to one unit and the mapping from configured points to register
reads; decoding is `modbus_codec`'s job. Retries, backoff and logging belong to the core.
"""

from __future__ import annotations

import math
from typing import Literal, Self

from pydantic import Field, model_validator
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from agent.errors import DeviceTimeout, DeviceUnreachable
from agent.model import Reading, now_ms
from drivers.base import NAME_PATTERN, DeviceConfig, Strict
from drivers.modbus_codec import (
    ByteOrder,
    PointType,
    decode,
    register_count,
    shortest_float32,
)

Table = Literal["coil", "discrete", "holding", "input"]


class ModbusPoint(Strict):
    """One value read from a Modbus table, decoded, then `value * scale + offset`."""

    name: str = Field(pattern=NAME_PATTERN, max_length=64, description="metric name")
    table: Table = "holding"
    address: int = Field(ge=0, le=65535, description="0-based register or bit address")
    type: PointType = "uint16"
    length: int | None = Field(
        default=None, ge=1, le=125, description="registers, for type string only"
    )
    byte_order: ByteOrder | None = Field(
        default=None, description="overrides the device's byte_order for this point"
    )
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        bit_table = self.table in ("coil", "discrete")
        if bit_table and self.type != "bool":
            raise ValueError(f"table {self.table} holds bits: type must be bool, not {self.type}")
        if not bit_table and self.type == "bool":
            raise ValueError(
                f"type bool needs table coil or discrete; table {self.table} holds registers"
            )
        if self.type == "string" and self.length is None:
            raise ValueError("type string needs `length` (number of registers)")
        if self.type != "string" and self.length is not None:
            raise ValueError("`length` is only for type string")
        end = self.address + register_count(self.type, self.length) - 1
        if end > 65535:
            raise ValueError(f"point ends at address {end}, past the last address 65535")
        return self


class ModbusTcpConfig(DeviceConfig):
    """A Modbus TCP device: `host:port`, unit id, and its points."""

    driver: Literal["modbus_tcp"]
    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    unit: int = Field(default=1, ge=0, le=255, description="Modbus unit (slave) id")
    byte_order: ByteOrder = Field(
        default="ABCD", description="default for multi-register points: ABCD, CDAB, BADC, DCBA"
    )
    points: list[ModbusPoint] = Field(min_length=1)


_EXCEPTION_QUALITY = {
    1: "illegal_function", 2: "illegal_address", 3: "illegal_value", 4: "device_failure",
    5: "acknowledge", 6: "device_busy", 10: "gateway_path_unavailable",
    11: "gateway_target_failed",
}


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


class ModbusTcp:
    """One Modbus TCP unit: a reused connection, one read per point (planning comes later)."""

    config_model = ModbusTcpConfig

    def __init__(self, config: ModbusTcpConfig) -> None:
        self.config = config
        self._client: ModbusTcpClient | None = None

    def metrics(self) -> list[tuple[str, str | None]]:
        return [(p.name, p.unit) for p in self.config.points]

    def open(self) -> None:
        c = self.config
        client = ModbusTcpClient(c.host, port=c.port, timeout=c.timeout, retries=0)
        if not client.connect():
            client.close()
            raise DeviceUnreachable(f"cannot connect to {c.host}:{c.port}")
        self._client = client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def poll(self) -> list[Reading]:
        if self._client is None:
            self.open()
        ts = now_ms()
        return [self._read_point(p, ts) for p in self.config.points]

    def _read_point(self, p: ModbusPoint, ts: int) -> Reading:
        assert self._client is not None
        c = self.config
        count = register_count(p.type, p.length)
        read = {
            "holding": self._client.read_holding_registers,
            "input": self._client.read_input_registers,
            "coil": self._client.read_coils,
            "discrete": self._client.read_discrete_inputs,
        }[p.table]
        try:
            rr = read(p.address, count=count, device_id=c.unit)
        except ModbusIOException as exc:
            raise DeviceTimeout(
                f"no answer from unit {c.unit} at {c.host}:{c.port}: {exc}"
            ) from exc
        except ConnectionException as exc:
            raise DeviceUnreachable(f"connection to {c.host}:{c.port} lost: {exc}") from exc
        if rr.isError():
            code = getattr(rr, "exception_code", 0)
            quality = _EXCEPTION_QUALITY.get(code, f"exception_{code}")
            return Reading(c.name, p.name, None, p.unit, ts, quality)
        value: bool | int | float | str
        if p.type == "bool":
            value = bool(rr.bits[0])
        else:
            try:
                decoded = decode(rr.registers, p.type, p.byte_order or c.byte_order, p.length)
            except ValueError:
                return Reading(c.name, p.name, None, p.unit, ts, "decode_error")
            if p.type == "float32" and isinstance(decoded, float):
                decoded = shortest_float32(decoded)
            value = decoded if isinstance(decoded, str) else scaled(decoded, p.scale, p.offset)
        if isinstance(value, float) and not math.isfinite(value):
            return Reading(c.name, p.name, None, p.unit, ts, "not_finite")
        return Reading(c.name, p.name, value, p.unit, ts)
