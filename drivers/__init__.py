"""The driver registry: YAML `driver:` name -> driver class. One line per driver.

The registry key, the module name and the YAML `driver:` value are the same word.
"""

from __future__ import annotations

from drivers.modbus_tcp import ModbusTcpConfig

# name -> config model; the driver classes join when their modules define them.
CONFIG_MODELS = {
    "modbus_tcp": ModbusTcpConfig,
}
