"""`edge-agent probe` and `edge-agent scan`, in process, against real pymodbus peers."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli.main import main
from agent.cli.probe import ask, unit_driver
from agent.core.errors import DeviceTimeout
from agent.sim.broker import free_port
from agent.sim.modbus import ModbusSimulator
from drivers.modbus.frame import crc16
from tests.peers.serial_modbus import NullModem, SerialSimulator
from tests.support import write_config


@pytest.fixture
def plc() -> Iterator[ModbusSimulator]:
    sim = ModbusSimulator(free_port(), size=400, holes={"input": [150]})
    sim.start()
    yield sim
    sim.stop()


def config(tmp_path: Path, port: int) -> Path:
    points = [{"name": f"p{a}", "table": "input", "address": a, "type": "float32"}
              for a in range(0, 300, 5)]  # 60 points over 300 registers
    points.append({"name": "level", "table": "holding", "address": 7, "type": "float32",
                   "byte_order": "CDAB", "unit": "m"})
    return write_config(tmp_path / "agent.yaml", broker_port=1, devices=[
        {"name": "plc", "driver": "modbus_tcp", "host": "127.0.0.1", "port": port,
         "timeout": "500ms", "points": points}])


def test_probe_plan(tmp_path: Path, plc: ModbusSimulator, capsys: pytest.CaptureFixture[str]
                    ) -> None:
    assert main(["probe", "-c", str(config(tmp_path, plc.port)), "plc", "--plan"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("plc: 61 point(s) in 4 request(s)")
    assert "  input 0..121 (122)" in out and "  holding 7..8 (2)" in out


def test_probe_prints_raw_and_decoded_values(
        tmp_path: Path, plc: ModbusSimulator, capsys: pytest.CaptureFixture[str]) -> None:
    plc.set_value(1, "holding", 7, "float32", 2.5, order="CDAB")
    plc.set_value(1, "input", 10, "float32", 7.25)
    assert main(["probe", "-c", str(config(tmp_path, plc.port)), "plc", "--orders"]) == 0
    out = capsys.readouterr().out
    assert "  input 125..246 (122)         illegal_address" in out  # across the hole
    assert "  input 0..121 (122)           0000 0000 0000 0000 0000 0000 0000 0000 ... (+114)" \
        in out
    assert "level                holding      7  0000 4020" in out and "2.5 m" in out
    assert "ABCD: 2.30037e-41  CDAB: 2.5  BADC: 1.15691e-41  DCBA: 1.6263033e-19" in out
    assert "p10                  input       10  40E8 0000            7.25" in out
    assert "p150" in out and "(illegal_address)" in out


def test_probe_errors_are_messages(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path, free_port())  # nobody listens
    assert main(["probe", "-c", str(path), "plx"]) == 1
    assert "no device 'plx' (did you mean 'plc'?)" in capsys.readouterr().err
    assert main(["probe", "-c", str(path), "plc"]) == 1
    assert "plc: no answer: cannot connect to 127.0.0.1" in capsys.readouterr().out


def test_scan_lists_the_units_that_answer(capsys: pytest.CaptureFixture[str]) -> None:
    wire = NullModem()
    sim = SerialSimulator(wire.b, units=(2, 5, 6), size=8)
    sim.silent.add(6)
    sim.set_registers(5, "holding", 0, [42])
    sim.start()
    try:
        code = main(["scan", "--port", wire.a, "--units", "1-7", "--timeout", "0.1"])
    finally:
        sim.stop()
        wire.close()
    out = capsys.readouterr().out
    assert code == 0
    assert "  unit   2: holding 0 = 0" in out and "  unit   5: holding 0 = 42" in out
    assert out.splitlines()[-1] == "2 unit(s) answered: 2, 5"


def test_scan_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", "--port", "/dev/ttyNOPE7", "--units", "3"]) == 1
    assert "cannot open bus scan (/dev/ttyNOPE7)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["scan", "--port", "/dev/x", "--units", "0-300"])
    assert exit_.value.code == 2
    assert json.dumps("units must be within 1..247")[1:-1] in capsys.readouterr().err


def test_scan_shows_busy_and_damaged_replies_as_they_came(
        capsys: pytest.CaptureFixture[str]) -> None:
    """One transaction per unit, nothing retried: a busy or damaged reply is what scan says."""
    wire = NullModem()
    sim = SerialSimulator(wire.b, units=(2, 3, 5), size=8)
    sim.set_registers(5, "holding", 0, [42])
    sim.set_busy(3, 1)
    sim.corrupt = 1  # the first reply: unit 2's
    sim.start()
    try:
        code = main(["scan", "--port", wire.a, "--units", "2-5", "--timeout", "0.1"])
    finally:
        sim.stop()
        wire.close()
    lines = capsys.readouterr().out.splitlines()
    assert code == 0
    assert lines[1].startswith("  unit   2: garbled reply (CRC error in reply from unit 2: ")
    assert lines[1].endswith("): check baud rate and parity")
    assert lines[2:] == ["  unit   3: answers with exception 6 (device busy)",
                         "  unit   5: holding 0 = 42", "3 unit(s) answered: 2, 3, 5"]


def test_scan_speaks_ascii(capsys: pytest.CaptureFixture[str]) -> None:
    wire = NullModem()
    sim = SerialSimulator(wire.b, units=(7,), size=8, framer="ascii")
    sim.set_registers(7, "holding", 0, [1234])
    sim.start()
    try:
        code = main(["scan", "--port", wire.a, "--units", "6-7", "--timeout", "0.1", "--ascii"])
    finally:
        sim.stop()
        wire.close()
    out = capsys.readouterr().out
    assert code == 0 and "(ascii), units 6..7" in out
    assert out.splitlines()[1:] == ["  unit   7: holding 0 = 1234", "1 unit(s) answered: 7"]


class _Line:
    """A serial line whose unit answers every request with the same RTU reply."""

    name, timeout, opens = "fake", 0.1, 1

    def __init__(self, reply: bytes) -> None:
        self.lock = threading.RLock()
        self.reply, self.pending = reply, b""

    def send(self, data: bytes) -> None:
        self.pending = self.reply

    def recv(self, n: int, deadline: float) -> bytes:
        if len(self.pending) < n:
            raise DeviceTimeout("no reply on fake")
        out, self.pending = self.pending[:n], self.pending[n:]
        return out

    def recv_line(self, deadline: float) -> bytes:
        raise DeviceTimeout("no reply on fake")

    def read_available(self, timeout: float) -> bytes:
        return b""

    def discard_input(self) -> None:
        self.pending = b""

    def close(self) -> None:
        pass


def _rtu(adu: bytes) -> bytes:
    return adu + crc16(adu).to_bytes(2, "little")


@pytest.mark.parametrize(("reply", "said"), [
    (_rtu(bytes([1, 4, 2, 0, 7])), "odd reply (reply to function 3 has function 04)"),
    (_rtu(bytes([1, 3, 4, 0, 7, 0, 8])), "odd reply (asked 1 registers, reply carries 4 bytes)"),
    (_rtu(bytes([1, 0x83, 2])), "answers with exception 2 (illegal data address)"),
    (_rtu(bytes([1, 0x83, 11])), None),  # a gateway saying nobody is there
    (_rtu(bytes([2, 3, 2, 0, 7])), "garbled reply (reply from unit 2 while waiting for unit 1): "
                                   "check baud rate and parity"),
    (b"", None),
])
def test_scan_words_for_each_kind_of_reply(reply: bytes, said: str | None) -> None:
    assert ask(unit_driver(_Line(reply), "rtu", 1)) == said
