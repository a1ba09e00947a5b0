"""The `modbus_tcp` driver: polls one Modbus TCP device (PLC, analyser, meter) for its points.

It owns the TCP connection to one unit and the mapping from configured points to register
reads; decoding is `modbus_codec`'s job. Retries, backoff and logging belong to the core.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from drivers.base import NAME_PATTERN, DeviceConfig, Strict
from drivers.modbus_codec import ByteOrder, PointType, register_count

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
