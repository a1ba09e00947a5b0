"""The `modbus_rtu` driver: one Modbus RTU unit on a shared bus (RS-485, or RTU over TCP).

It owns the RTU device's config model (`bus`, `unit` 1..247) and binds the device to the
bus's port, which the core owns and serializes: any number of units share one line. Framing
(unit + PDU + CRC-16), planning and decoding are `drivers.modbus.driver`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

from pydantic import Field

from agent.transport.ports import Port
from drivers.modbus.driver import ModbusDeviceConfig, ModbusDriver
from drivers.modbus.frame import Framing


class ModbusSerialConfig(ModbusDeviceConfig):
    """A Modbus unit on a named bus from the config's `buses:`."""

    bus: str = Field(min_length=1, description="name of an entry in `buses:`")
    unit: int = Field(default=1, ge=1, le=247, description="Modbus unit (slave) id on the bus")


class ModbusRtuConfig(ModbusSerialConfig):
    driver: Literal["modbus_rtu"]


def bus_timeout(config: ModbusSerialConfig, bus_default: float) -> float:
    """The device's own `timeout` if it sets one, else the bus's."""
    return config.timeout if "timeout" in config.model_fields_set else bus_default


class ModbusRtu(ModbusDriver):
    """One RTU unit on a shared bus."""

    config_model: ClassVar[type[ModbusDeviceConfig]] = ModbusRtuConfig
    framing: Framing = "rtu"

    def __init__(self, config: ModbusSerialConfig, ports: Mapping[str, Port]) -> None:
        port = ports[config.bus]
        timeout = bus_timeout(config, port.timeout)
        super().__init__(config, port, config.unit, timeout, bus=config.bus)
