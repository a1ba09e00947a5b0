"""The driver registry: YAML `driver:` name -> driver class. One line per driver.

The registry key, the module name and the YAML `driver:` value are the same word. Each driver
class carries its pydantic `config_model`; the config loader builds the device union from them.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.transport.ports import Port
from drivers.base import DeviceConfig, Driver, DriverClass
from drivers.modbus.ascii import ModbusAscii
from drivers.modbus.rtu import ModbusRtu
from drivers.modbus.tcp import ModbusTcp, ModbusTcpConfig
from drivers.serial_line.driver import SerialLine

REGISTRY: dict[str, DriverClass] = {
    "modbus_tcp": ModbusTcp,
    "modbus_rtu": ModbusRtu,
    "modbus_ascii": ModbusAscii,
    "serial_line": SerialLine,
}

CONFIG_MODELS: dict[str, type[DeviceConfig]] = {
    name: cls.config_model for name, cls in REGISTRY.items()
}


def create(config: DeviceConfig, ports: Mapping[str, Port] | None = None) -> Driver:
    """The driver instance for one validated device config, bound to the buses' ports."""
    cls = REGISTRY[config.driver]
    assert isinstance(config, cls.config_model)
    return cls(config, ports or {})


__all__ = ["CONFIG_MODELS", "REGISTRY", "ModbusTcpConfig", "create"]
