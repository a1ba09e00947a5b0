"""The driver registry: YAML `driver:` name -> driver class. One line per driver.

The registry key, the module name and the YAML `driver:` value are the same word. Each driver
class carries its pydantic `config_model`; the config loader builds the device union from them.
"""

from __future__ import annotations

from drivers.base import DeviceConfig, Driver, DriverClass
from drivers.modbus_tcp import ModbusTcp, ModbusTcpConfig

REGISTRY: dict[str, DriverClass] = {
    "modbus_tcp": ModbusTcp,
}

CONFIG_MODELS: dict[str, type[DeviceConfig]] = {
    name: cls.config_model for name, cls in REGISTRY.items()
}


def create(config: DeviceConfig) -> Driver:
    """The driver instance for one validated device config."""
    cls = REGISTRY[config.driver]
    assert isinstance(config, cls.config_model)
    return cls(config)


__all__ = ["CONFIG_MODELS", "REGISTRY", "ModbusTcpConfig", "create"]
