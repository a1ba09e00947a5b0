"""The `modbus_ascii` driver: one Modbus ASCII unit on a shared serial bus.

Like `modbus_rtu` (same keys, same bus sharing) but framed as ':' + hex + LRC + CRLF, as older
meters and some analysers speak it (often 7 data bits, even parity: set them on the bus).
"""

from __future__ import annotations

from typing import Literal

from drivers.modbus.rtu import ModbusRtu, ModbusSerialConfig


class ModbusAsciiConfig(ModbusSerialConfig):
    driver: Literal["modbus_ascii"]


class ModbusAscii(ModbusRtu):
    """One ASCII unit on a shared bus."""

    config_model = ModbusAsciiConfig
    framing = "ascii"
