"""Config: `buses:` shared by RTU/ASCII devices, `profile:` point lists, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.config.load import load_config
from agent.core.errors import ConfigError
from tests.support import ROOT

HEAD = """gateway: {id: gw}
mqtt: {host: localhost}
queue: {path: q.db}
"""
BUSES = """buses:
  - {name: rs485-1, port: /dev/ttyUSB0, baudrate: 19200, parity: E}
  - {name: converter, host: 10.0.0.5, port: 4001}
"""


def errors(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    return [str(i).replace(str(tmp_path) + "/", "") for i in err.value.issues]


def test_buses_and_profiles_load(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(HEAD + BUSES + """devices:
  - {name: orp, driver: modbus_rtu, bus: rs485-1, unit: 2, profile: delfino_drh7,
     points: [{name: orp, table: input, address: 2, type: float32, deadband: 5}]}
  - {name: air, driver: modbus_ascii, bus: rs485-1, unit: 3, profile: sht20_xymd02,
     byte_order: ABCD}
  - {name: meter, driver: modbus_rtu, bus: converter, profile: eastron_sdm630}
""")
    cfg = load_config(path)
    orp, air, meter = cfg.devices
    assert [b.address for b in cfg.buses] == ["/dev/ttyUSB0", "10.0.0.5:4001"]
    assert cfg.buses[0].gap == pytest.approx(3.5 * 11 / 19200)
    assert [p.name for p in orp.points] == ["water_temp", "orp"]  # type: ignore[attr-defined]
    assert orp.points[1].deadband == 5  # type: ignore[attr-defined]
    assert orp.byte_order == "CDAB"  # type: ignore[attr-defined]  # the profile's default
    assert air.byte_order == "ABCD"  # type: ignore[attr-defined]  # the device's own wins
    assert len(meter.points) == 14  # type: ignore[attr-defined]


def test_every_shipped_profile_is_valid(tmp_path: Path) -> None:
    shipped = sorted(p.stem for p in (ROOT / "config" / "profiles")
                     .glob("*.yaml"))
    assert len(shipped) >= 3
    devices = "".join(f"  - {{name: d{i}, driver: modbus_rtu, bus: rs485-1, unit: {i + 1}, "
                      f"profile: {name}}}\n" for i, name in enumerate(shipped))
    path = tmp_path / "agent.yaml"
    path.write_text(HEAD + BUSES + "devices:\n" + devices)
    assert len(load_config(path).devices) == len(shipped)
    for name in shipped:
        text = (ROOT / "config" / "profiles" / f"{name}.yaml").read_text()
        assert text.startswith("# ") and "Source:" in text, f"{name} must cite its source"


def test_bus_errors(tmp_path: Path) -> None:
    found = errors(tmp_path, HEAD + """buses:
  - {name: a, port: /dev/ttyUSB0}
  - {name: b, port: /dev/ttyUSB0}
  - {name: a, port: 502}
devices:
  - {name: d1, driver: modbus_rtu, bus: rs485, points: [{name: x, address: 0}]}
  - {name: d2, driver: modbus_rtu, bus: b, unit: 248, points: [{name: x, address: 0}]}
""")
    assert found == [
        "agent.yaml:6:21: buses[1].port: /dev/ttyUSB0 is already claimed by buses[0]; one bus "
        "per physical port (put every device on that line on the same bus)",
        "agent.yaml:7:5: buses[2]: port 502 is a number: give a serial device path such as "
        "/dev/ttyUSB0, or `host` for a serial-to-Ethernet converter",
        "agent.yaml:7:12: buses[2].name: duplicate bus name 'a' (also buses[0])",
        "agent.yaml:9:41: devices[0].bus: unknown bus 'rs485'; declared: a, b",
        "agent.yaml:10:50: devices[1].unit: 248 is out of range; allowed 1 to 247",
    ]


def test_profile_errors_point_into_the_profile(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "mine.yaml").write_text(
        "# local\npoints:\n  - {name: a, address: 0}\n  - {name: b, address: 1, type: flot32}\n"
        "colour: red\n")
    found = errors(tmp_path, HEAD + BUSES + """devices:
  - {name: d1, driver: modbus_rtu, bus: rs485-1, profile: mine}
  - {name: d2, driver: modbus_rtu, bus: rs485-1, unit: 2, profile: sht20_xymd2}
""")
    assert found[0].startswith("agent.yaml:9:")
    assert "devices[1].profile: no profile 'sht20_xymd2'" in found[0]
    assert "(did you mean 'sht20_xymd02'?)" in found[0]
    assert found[1:] == [
        "profiles/mine.yaml:4:33: devices[0].points[1].type: 'flot32' is not allowed; expected "
        "one of bool, int16, uint16, int32, uint32, int64, uint64, float32, float64, string "
        "(did you mean 'float32'?)",
        "profiles/mine.yaml:5:1: profile mine: 'colour' is an unknown key; allowed: points, "
        "description, interval, timeout, align, byte_order, max_gap, max_registers_per_read, "
        "max_bits_per_read",
    ]


def test_point_rules(tmp_path: Path) -> None:
    found = errors(tmp_path, HEAD + """devices:
  - name: plc
    driver: modbus_tcp
    host: h
    points:
      - {name: a, type: bool, address: 1}
      - {name: b, type: bool, address: 1, bit: 16}
      - {name: c, address: 1, max_silence: 5m}
      - {name: d, address: 1, values: {0: off}, deadband: 1}
""")
    assert [f.split(": ", 1)[1] for f in found] == [
        "devices[0].points[0]: type bool on table holding needs `bit` (0..15) to pick one bit "
        "of the register; or use table coil or discrete",
        "devices[0].points[1].bit: 16 is out of range; allowed 0 to 15",
        "devices[0].points[2]: max_silence needs deadband or on_change (unfiltered points are "
        "reported at every poll)",
        "devices[0].points[3]: deadband is for numbers; a point with a value map uses on_change",
    ]
