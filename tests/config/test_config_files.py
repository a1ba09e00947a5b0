"""Config across files: devices.d, site profiles, ${VAR}, and the corpus of broken configs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from agent.config.load import load, load_config
from agent.config.yaml import MAX_FILE_BYTES, read_bounded
from agent.core.errors import ConfigError
from tests.support import EDGE_AGENT

BROKEN = Path(__file__).resolve().parent / "broken"
SECRET = "s3cr3t-t0ken-value"
ENV = {"EDGE_TEST_HOST": "broker.example", "EDGE_TEST_TOKEN": SECRET}
HEAD = """gateway: {id: gw-1}
mqtt: {host: broker.local}
queue: {path: q.db}
buses:
  - {name: rs485-1, port: /dev/ttyUSB0}
"""


@pytest.mark.parametrize("case", sorted(p.name for p in BROKEN.iterdir() if p.is_dir()))
def test_broken_config_corpus(case: str) -> None:
    folder = BROKEN / case
    expected = [x for x in (folder / "expect.txt").read_text().splitlines() if x.strip()]
    with pytest.raises(ConfigError) as info:
        load_config(folder / "agent.yaml", env=ENV)
    got = [f"{os.path.relpath(i.file, folder)}:{i.line}:{i.col}: {i.message}"
           for i in info.value.issues]
    shown = "\n".join(got)
    assert len(got) == len(expected), shown
    for want, line in zip(expected, got, strict=True):
        where, text = want.split(": ", 1)
        assert line.startswith(where + ": "), shown
        rest = line[len(where) + 2:]
        for part in text.split(" ... "):  # in order
            assert part in rest, f"{part!r} not in {line!r}"
            rest = rest[rest.index(part) + len(part):]
    assert SECRET not in shown


def _site(tmp_path: Path, devices: dict[str, str], head: str = HEAD) -> Path:
    (tmp_path / "devices.d").mkdir()
    for name, text in devices.items():
        (tmp_path / "devices.d" / name).write_text(text)
    (tmp_path / "agent.yaml").write_text(head)
    return tmp_path / "agent.yaml"


def test_devices_d_adds_one_device_per_file_in_name_order(tmp_path: Path) -> None:
    cfg = _site(tmp_path, {
        "b-orp.yaml": "{name: orp, driver: modbus_rtu, bus: rs485-1, unit: 2, "
                      "profile: delfino_drh7}\n",
        "a-ph.yml": "name: ph\ndriver: modbus_rtu\nbus: rs485-1\nprofile: supmea_sup_ph8001\n",
        ".hidden.yaml": "not: a device\n", "notes.txt": "ignored\n",
        "c-old.yaml.off": "ignored: true\n",
    }, HEAD + "devices:\n  - {name: plc, driver: modbus_tcp, host: h, "
              "points: [{name: a, address: 0}]}\n")
    loaded = load(cfg)
    assert [d.name for d in loaded.config.devices] == ["plc", "ph", "orp"]
    assert loaded.files == (str(cfg), str(tmp_path / "devices.d" / "a-ph.yml"),
                            str(tmp_path / "devices.d" / "b-orp.yaml"))
    assert loaded.config.devices_dir == str(tmp_path / "devices.d")


def test_devices_dir_and_profiles_dir_are_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "etc" / "sensors").mkdir(parents=True)
    (tmp_path / "etc" / "ours").mkdir()
    (tmp_path / "etc" / "ours" / "supmea_sup_ph8001.yaml").write_text(
        "points: [{name: only_ph, address: 1, scale: 0.01}]\nbyte_order: CDAB\n")
    (tmp_path / "etc" / "sensors" / "ph.yaml").write_text(
        "{name: ph, driver: modbus_rtu, bus: rs485-1, profile: supmea_sup_ph8001}\n")
    (tmp_path / "etc" / "agent.yaml").write_text(
        HEAD + "devices_dir: sensors\nprofiles_dir: ours\n")
    [ph] = load_config(tmp_path / "etc" / "agent.yaml").devices
    dumped = ph.model_dump()
    assert [p["name"] for p in dumped["points"]] == ["only_ph"]  # the site's profile wins
    assert dumped["byte_order"] == "CDAB"
    (tmp_path / "etc" / "agent.yaml").write_text(HEAD + "devices_dir: nowhere\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "etc" / "agent.yaml")
    assert (6, "devices_dir") in [(i.line, i.message.split(":")[0]) for i in info.value.issues]


def test_env_substitution(tmp_path: Path) -> None:
    env = {"HOST": "10.1.2.3", "DEV": "pump", "PORT": "5020", "N": "7"}
    cfg = _site(tmp_path, {"plc.yaml": "name: ${DEV}-plc\ndriver: modbus_tcp\nhost: h\n"
                                       "port: ${PORT}\npoints: [{name: a, address: 0}]\n"},
                "gateway:\n  id: gw-${N}\nmqtt: {host: '${HOST}'}\n"
                "queue: {path: '/var/$${HOME}/q.db'}\n")
    config = load_config(cfg, env=env)
    assert (config.mqtt.host, config.gateway.id) == ("10.1.2.3", "gw-7")
    assert config.queue.path == "/var/${HOME}/q.db"  # $${ is a literal ${
    [plc] = config.devices
    assert (plc.name, plc.model_dump()["port"]) == ("pump-plc", 5020)
    # unquoted inside a flow mapping, `${` is YAML syntax: the error says what to do
    (tmp_path / "agent.yaml").write_text("gateway: {id: gw-${N}}\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg, env=env)
    assert 'put a value with ${VAR} in quotes: "${VAR}"' in str(info.value)


def test_a_profile_can_hold_a_line_format(tmp_path: Path) -> None:
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "pm_sensor.yaml").write_text(
        "# a text particulate sensor: PM2.5=12.3,PM10=20.1\n"
        "description: particulate sensor, key=value lines\n"
        "mode: stream\nformat: pairs\nstale_after: 30s\n"
        "points:\n  - {name: pm25, key: PM2.5, unit: ug/m3}\n"
        "  - {name: pm10, key: PM10, unit: ug/m3}\n")
    cfg = _site(tmp_path, {
        "pm.yaml": "name: pm\ndriver: serial_line\nbus: rs485-1\nprofile: pm_sensor\n"
                   "points: [{name: pm10, key: PM10, unit: ug/m3, deadband: 1}]\n"})
    [pm] = load_config(cfg).devices
    dumped = pm.model_dump()
    assert (dumped["mode"], dumped["format"], dumped["stale_after"]) == ("stream", "pairs", 30.0)
    assert [(p["name"], p["deadband"]) for p in dumped["points"]] == [("pm25", None),
                                                                    ("pm10", 1.0)]
    # wiring in a profile is refused there, at its line
    (tmp_path / "profiles" / "pm_sensor.yaml").write_text("mode: poll\nbus: rs485-2\n"
                                                          "command: R\nformat: pairs\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    [issue] = info.value.issues
    assert (issue.file, issue.line) == (str(tmp_path / "profiles" / "pm_sensor.yaml"), 2)
    assert issue.message == ("profile pm_sensor: 'bus' is not for a profile: it says which "
                             "device this is or where it is wired; set it in the device's own "
                             "config")


def _one_issue(cfg: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load(cfg)
    [found] = info.value.issues
    return f"{os.path.basename(found.file)}:{found.line}:{found.col}: {found.message}"


def test_a_fifo_in_devices_d_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    cfg = _site(tmp_path, {})
    os.mkfifo(tmp_path / "devices.d" / "pipe.yaml")
    assert _one_issue(cfg) == ("pipe.yaml:1:1: cannot read the config: it is a FIFO (named "
                               "pipe), not a regular file")


def test_a_link_to_a_device_is_refused_and_a_link_to_a_file_is_read(tmp_path: Path) -> None:
    cfg = _site(tmp_path, {})
    (tmp_path / "devices.d" / "zero.yaml").symlink_to("/dev/zero")
    assert _one_issue(cfg) == ("zero.yaml:1:1: cannot read the config: it is a character "
                               "device, not a regular file")
    (tmp_path / "devices.d" / "zero.yaml").unlink()
    (tmp_path / "plc.txt").write_text("{name: plc, driver: modbus_tcp, host: h, "
                                      "points: [{name: a, address: 0}]}\n")
    (tmp_path / "devices.d" / "plc.yaml").symlink_to(tmp_path / "plc.txt")
    assert [d.name for d in load_config(cfg).devices] == ["plc"]


def test_a_file_over_the_size_cap_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    cfg = _site(tmp_path, {"big.yaml": "# " + "x" * MAX_FILE_BYTES + "\n"})
    assert _one_issue(cfg) == (f"big.yaml:1:1: cannot read the config: the file is "
                               f"{MAX_FILE_BYTES + 3:,} bytes; a config file may have at most "
                               f"{MAX_FILE_BYTES:,}")


def test_reading_is_bounded_in_time(tmp_path: Path) -> None:
    slow = tmp_path / "slow.yaml"
    slow.write_bytes(b"a: 1\n" * 40_000)  # 200 kB: several 64 kB reads
    with pytest.raises(ValueError, match="longer than 0 s"):
        read_bounded(str(slow), deadline=0.0)
    assert read_bounded(str(slow)) == b"a: 1\n" * 40_000


def test_check_refuses_a_fifo_agent_yaml_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "agent.yaml")
    proc = subprocess.run([*EDGE_AGENT, "check", "-c", str(tmp_path / "agent.yaml")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "it is a FIFO (named pipe), not a regular file" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
