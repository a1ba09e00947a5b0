"""The `modbus_tcp` driver: one Modbus TCP device (PLC, analyser, meter, TCP gateway unit).

It owns the TCP device's config model and builds a private `agent.transport.ports.TcpPort` for
it: one connection per device, reused across polls and re-opened after the peer dropped it.
Planning, transactions and decoding are `drivers.modbus.driver`'s; retries, backoff and logging
the core's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field

from agent.transport.ports import Port, TcpPort
from drivers.modbus.driver import ModbusDeviceConfig, ModbusDriver, ModbusPoint, scaled

__all__ = ["ModbusPoint", "ModbusTcp", "ModbusTcpConfig", "scaled"]


class ModbusTcpConfig(ModbusDeviceConfig):
    """A Modbus TCP device: `host:port`, unit id, and its points."""

    driver: Literal["modbus_tcp"]
    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    unit: int = Field(default=1, ge=0, le=255, description="Modbus unit (slave) id")


class ModbusTcp(ModbusDriver):
    """One Modbus TCP unit over its own reused connection (MBAP framing)."""

    config_model = ModbusTcpConfig
    framing = "mbap"

    def __init__(self, config: ModbusTcpConfig, ports: Mapping[str, Port] | None = None) -> None:
        port = TcpPort(config.host, config.port, config.timeout)
        super().__init__(config, port, config.unit, config.timeout)
