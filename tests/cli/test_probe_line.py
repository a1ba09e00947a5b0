"""`edge-agent probe` on serial_line devices, in process, against a simulated text sensor on a
real pty: the raw frames (bytes shown safely), why bad ones were refused, the parsed fields."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.cli.main import main
from tests.peers.line_sensor import LineSensor


@pytest.fixture
def sensor(tmp_path: Path) -> Iterator[LineSensor]:
    s = LineSensor(tmp_path / "usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0")
    yield s
    s.close()


def config(tmp_path: Path, sensor: LineSensor, **device: Any) -> str:
    path = tmp_path / "agent.yaml"
    path.write_text(json.dumps({
        "gateway": {"id": "gw"}, "mqtt": {"host": "127.0.0.1"}, "queue": {"path": "q.db"},
        "buses": [{"name": "env", "port": str(sensor.link), "timeout": "300ms"}],
        "devices": [{"name": "env", "driver": "serial_line", "bus": "env", "format": "pairs",
                     "points": [{"name": "pm25", "key": "PM2.5", "unit": "ug/m3"},
                                {"name": "pm10", "key": "PM10", "type": "int"}]} | device]}))
    return str(path)


def test_probe_stream_shows_raw_frames_and_fields(
        tmp_path: Path, sensor: LineSensor, capsys: pytest.CaptureFixture[str]) -> None:
    # "$" starts a frame: a frame cut by the moment the port opened is junk, not a frame
    sensor.stream([b"\xff\xfe\x00\x80$PM2.5=12.3,PM10=20\r\n"], 0.02)
    assert main(["probe", "-c", config(tmp_path, sensor, mode="stream", stale_after="5s",
                                       start="$", terminator="\r\n"), "env"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"env: listening on bus env ({sensor.link}) for up to 5 s"
    assert re.search(r"junk     '[^']*\\xff\\xfe\\x00\\x80'  bytes outside frames", out)
    assert "frame    'PM2.5=12.3,PM10=20'  ok" in out
    assert re.search(r"fields of the last valid frame \(\d+ valid of \d+\)", out)
    assert "  pm25                 PM2.5        '12.3'           12.3 ug/m3" in out
    assert "  pm10                 PM10         '20'             20" in out


def test_probe_poll_shows_refused_frames(
        tmp_path: Path, sensor: LineSensor, capsys: pytest.CaptureFixture[str]) -> None:
    sensor.reply({b"READ\r\n": b"\x9c\xe3PM2.5=3\r\nPM2.5=4.5,PM10=7\r\n"})
    path = config(tmp_path, sensor, mode="poll", command="READ\\r\\n",
                  checksum={"type": "sum", "separator": "*"})
    assert main(["probe", "-c", path, "env"]) == 1
    out = capsys.readouterr().out
    assert f"env: sent 'READ\\r\\n' on bus env ({sensor.link}), waiting up to 0.3 s" in out
    assert "frame    '\\x9c\\xe3PM2.5=3'  checksum_error: no checksum separator '*'" in out
    assert "env: no valid frame" in out
    assert main(["probe", "-c", path, "env", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "env: poll on bus env" in out and "format pairs; checksum sum (hex)" in out
    assert "  command 'READ\\r\\n'" in out and "  pm10                 PM10         int" in out
    sensor.reply({b"READ\r\n": b"PM10=x\r\n"})
    assert main(["probe", "-c", config(tmp_path, sensor, mode="poll", command="READ\\r\\n"),
                 "env"]) == 0
    out = capsys.readouterr().out
    assert "  pm25                 PM2.5        -                - (missing)" in out
    assert "  pm10                 PM10         'x'              - (decode_error)" in out


def test_probe_on_an_unplugged_sensor(tmp_path: Path, sensor: LineSensor,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    sensor.unplug()
    assert main(["probe", "-c", config(tmp_path, sensor, mode="stream", stale_after="200ms"),
                 "env"]) == 1
    assert "env: no valid frame: cannot open bus env" in capsys.readouterr().out
