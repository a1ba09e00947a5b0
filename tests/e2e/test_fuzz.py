"""Bad input in the chaos spirit: decoders fed arbitrary bytes and registers, and configs that
try to make the agent execute something or hand a secret to other users, through the real CLI.

Every decoder must answer with a reading or a DriverError (a quality), never another exception;
every refused config must exit 1 (check) / 2 (run) with the place and the reason, and nothing in
it may ever run.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.errors import DeviceTimeout, DriverError
from drivers.modbus.driver import ModbusPoint, point_value
from drivers.modbus.frame import crc16, parse_read, read_ascii, read_mbap, read_rtu
from drivers.serial_line.parse import Framer
from tests.support import EDGE_AGENT, modbus_device, write_config


def feeder(data: bytes):  # type: ignore[no-untyped-def]
    """A `recv(n)` over `data` that times out when it runs dry, like a silent line."""
    view = memoryview(data)
    pos = 0

    def recv(n: int) -> bytes:
        nonlocal pos
        if pos + n > len(view):
            raise DeviceTimeout("no more bytes")
        chunk, pos = bytes(view[pos:pos + n]), pos + n
        return chunk

    return recv


FC = st.sampled_from([1, 2, 3, 4])


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 247), FC, st.integers(1, 125))
def test_modbus_decoders_take_any_bytes(data: bytes, unit: int, fc: int, count: int) -> None:
    for decode in (lambda: read_rtu(feeder(data), unit, fc),
                   lambda: read_ascii(lambda: data, unit),
                   lambda: read_mbap(feeder(data), 7, unit),
                   lambda: parse_read(data, fc, count)):
        try:
            decode()
        except DriverError as exc:
            assert str(exc), "every refusal says why"


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 247), st.sampled_from([3, 4]), st.lists(st.integers(0, 0xFFFF), min_size=1,
                                                              max_size=20), st.data())
def test_rtu_reply_with_one_damaged_byte_is_refused(unit: int, fc: int, regs: list[int],
                                                    data: st.DataObject) -> None:
    body = bytes([unit, fc, 2 * len(regs)]) + b"".join(r.to_bytes(2, "big") for r in regs)
    adu = body + crc16(body).to_bytes(2, "little")
    assert parse_read(read_rtu(feeder(adu), unit, fc), fc, len(regs)) == regs
    i = data.draw(st.integers(0, len(adu) - 1))
    flip = data.draw(st.integers(1, 255))
    damaged = adu[:i] + bytes([adu[i] ^ flip]) + adu[i + 1:]
    with pytest.raises(DriverError):  # CRC-16 catches every single-byte error
        parse_read(read_rtu(feeder(damaged + b"\0" * 300), unit, fc), fc, len(regs))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=20), st.sampled_from([b"\n", b"\r", b"*"]),
       st.sampled_from([None, b"$", b"\x02"]), st.integers(1, 64))
def test_framer_takes_any_byte_stream_and_stays_bounded(chunks: list[bytes], terminator: bytes,
                                                        start: bytes | None,
                                                        max_length: int) -> None:
    framer = Framer(terminator, start if start != terminator else None, max_length)
    for chunk in chunks:
        for event in framer.feed(chunk):
            assert event.kind
        assert framer.pending <= max_length + len(terminator) + 1
    framer.reset()


def check(cfg: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*EDGE_AGENT, "check", "-c", str(cfg)], capture_output=True,
                          text=True, timeout=60, check=False)


def test_nothing_in_a_config_is_ever_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    cfg = write_config(tmp_path / "agent.yaml", broker_port=1884,
                       devices=[modbus_device("plc", 5020)])
    text = cfg.read_text()
    tag = f'!!python/object/apply:os.system ["touch {marker}"]'
    cfg.write_text(text.replace('"host": "127.0.0.1"', f'"host": {tag}', 1))
    proc = check(cfg)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "YAML tag !!python/object/apply:os.system is not allowed" in proc.stdout + proc.stderr
    # shell and template syntax is plain text to the agent: at most a bad value, never run
    for trick in (f"$(touch {marker})", f"`touch {marker}`",
                  f"{{{{ __import__('os').system('touch {marker}') }}}}"):
        body = json.loads(text)
        body["gateway"]["site"] = trick
        body["devices"][0]["host"] = trick
        cfg.write_text(json.dumps(body))
        proc = check(cfg)
        assert proc.returncode in (0, 1), (trick, proc.stdout, proc.stderr)
        assert not marker.exists(), f"{trick} was executed"
    assert not marker.exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o660, 0o604])
@pytest.mark.parametrize("where", ["mqtt.password_file", "mqtt.tls.key_file",
                                   "status_page.token_file"])
def test_secrets_other_users_can_read_are_refused_by_the_cli(tmp_path: Path, where: str,
                                                             mode: int) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret-value-that-must-not-leak\n")
    os.chmod(secret, mode)
    cfg = write_config(tmp_path / "agent.yaml", broker_port=1884,
                       devices=[modbus_device("plc", 5020)])
    body = json.loads(cfg.read_text())
    section, *rest = where.split(".")
    node = body.setdefault(section, {})
    if rest[0] == "tls":
        node["tls"] = {"cert_file": str(secret), "key_file": str(secret)}
    else:
        node[rest[0]] = str(secret)
        if section == "mqtt":
            node["username"] = "gw"
        else:
            node["enabled"] = True
    cfg.write_text(json.dumps(body))
    proc = check(cfg)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "readable by other users" in out and "chmod 600" in out, out
    assert f"mode {mode:o}" in out, out
    assert "s3cret" not in out, "a refused secret is never echoed"
    run = subprocess.run([*EDGE_AGENT, "run", "-c", str(cfg)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert run.returncode == 2 and "s3cret" not in run.stdout + run.stderr
    os.chmod(secret, 0o600)
    assert "readable by other users" not in check(cfg).stdout


@pytest.mark.parametrize("target", ["/dev/zero", "fifo", "dir"])
def test_a_secret_that_is_not_a_regular_file_is_refused(tmp_path: Path, target: str) -> None:
    """A FIFO or /dev/zero would hang or fill memory when read: refused before reading."""
    path = Path(target) if target.startswith("/") else tmp_path / target
    if target == "fifo":
        os.mkfifo(path, 0o600)
    elif target == "dir":
        path.mkdir(mode=0o700)
    cfg = write_config(tmp_path / "agent.yaml", broker_port=1884,
                       devices=[modbus_device("plc", 5020)], username="gw",
                       password_file=str(path))
    proc = check(cfg)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "password_file" in proc.stdout + proc.stderr


REGISTER_TYPES = {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "int64": 4,
                  "uint64": 4, "float64": 4, "string": 3}


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(sorted(REGISTER_TYPES)), st.sampled_from(["ABCD", "CDAB", "BADC", "DCBA"]),
       st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4),
       st.sampled_from([1, 0.1, 0.001, 1e300, -2.5]), st.sampled_from([0, 10, -1e308]))
def test_any_registers_make_a_sendable_reading(type_: str, order: str, regs: list[int],
                                               scale: float, offset: float) -> None:
    """Whatever a device answers, each point becomes a value the platform can take (finite,
    JSON) or a null with a quality; nothing raises."""
    n = REGISTER_TYPES[type_]
    kw = {"length": n} if type_ == "string" else {"scale": scale, "offset": offset}
    point = ModbusPoint(name="p", address=0, type=type_, **kw)
    value, quality = point_value(point, regs[:n], order)
    assert (quality == "good") == (value is not None)
    json.dumps(value, allow_nan=False)
