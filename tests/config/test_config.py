"""Tests for agent.config: the example loads; every broken file is reported at its exact place."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config.load import AgentConfig, json_schema, load_config
from agent.core.errors import ConfigError, ConfigIssue

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "agent.yaml"

# Line numbers matter: the expectations below point into this text.
BASE = """\
gateway: {id: gw-1}
mqtt:
  host: broker.local
  port: 1883
queue: {path: q.db}
devices:
  - name: plc
    driver: modbus_tcp
    host: 10.0.0.5
    unit: 1
    interval: 5s
    points:
      - {name: turbidity, address: 100, type: float32}
      - {name: chlorine, address: 102, type: uint16, scale: 0.01}
"""


def edit(*pairs: tuple[str, str]) -> str:
    text = BASE
    for old, new in pairs:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def issues_of(path: str | os.PathLike[str]) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.issues


# (id, file content (str or bytes), [(line, col, message substring), ...]): every issue listed.
CASES: list[tuple[str, str | bytes, list[tuple[int, int, str]]]] = [
    ("empty", "", [(1, 1, "the file is empty; expected a mapping with gateway, mqtt")]),
    ("comments-only", "# nothing yet\n\n", [(1, 1, "the file is empty")]),
    ("binary", b"gateway: {id: x}\nab\x00\x01\x02", [(2, 3, "NUL byte")]),
    ("not-utf8", BASE.encode().replace(b"gw-1", b"gw-\xe9"), [(1, 18, "not UTF-8")]),
    ("control-char", edit(("gw-1", "gw-\x07")), [(1, 18, "character U+0007 is not allowed")]),
    ("syntax-flow", edit(("port: 1883", "port: [1883")), [(5, 6, "invalid YAML: expected ','")]),
    ("syntax-colon", edit(("host: broker.local", "host: a: b")), [(3, 10, "mapping values")]),
    ("tab-indent", edit(("  port: 1883", "\tport: 1883")),
     [(4, 1, "hint: tabs are not allowed for indentation; use spaces")]),
    ("duplicate-key", edit(("  port: 1883\n", "  port: 1883\n  host: other\n")),
     [(5, 3, "duplicate key 'host'")]),
    ("two-documents", BASE + "---\nmore: 1\n", [(15, 1, "invalid YAML: but found another")]),
    ("undefined-alias", edit(("port: 1883", "port: *nope")), [(4, 9, "undefined alias")]),
    ("top-level-list", "- gateway\n- mqtt\n", [(1, 1, "top level must be a mapping")]),
    ("top-level-scalar", "hello\n",
     [(1, 1, "top level must be a mapping with gateway, mqtt, queue, devices; got 'hello'")]),
    ("devices-not-list", BASE.split("devices:")[0] + "devices: {name: plc}\n",
     [(6, 10, "devices: expected a list, got a mapping")]),
    ("devices-empty", BASE.split("devices:")[0] + "devices: []\n",
     [(6, 10, "devices: needs at least 1 item")]),
    ("python-tag", edit(("host: broker.local", "host: !!python/object/apply:os.system [ls]")),
     [(3, 9, "mqtt.host: YAML tag !!python/object/apply:os.system is not allowed")]),
    ("local-tag", edit(("gw-1", "!env GW")), [(1, 15, "gateway.id: YAML tag !env is not allowed")]),
    ("date-value", edit(("{id: gw-1}", "{id: gw-1, site: 2024-05-01}")),
     [(1, 27, "gateway.site: YAML read 2024-05-01 as a date/time; quote it")]),
    ("non-text-key", edit(("  port: 1883", "  1.5: 1883")), [(4, 3, "mqtt: key 1.5 must be text")]),
    ("unknown-key", edit(("port:", "prot:")),
     [(4, 3, "mqtt.prot: unknown key (did you mean 'port'?)")]),
    ("unknown-top-key", edit(("mqtt:", "mqqt:")),
     [(2, 1, "mqqt: unknown key (did you mean 'mqtt'?)")]),  # not also "missing 'mqtt'"
    ("unknown-key-no-match", edit(("port: 1883", "port: 1883\n  zzz: 1")),
     [(5, 3, "mqtt.zzz: unknown key; allowed keys: host, port, topic_prefix")]),
    ("bad-literal", edit(("type: float32", "type: flot32")),
     [(13, 47, "devices[0].points[0].type: 'flot32' is not allowed; expected one of bool, int16, "
               "uint16, int32, uint32, int64, uint64, float32, float64, string "
               "(did you mean 'float32'?)")]),
    ("qos", edit(("port: 1883", "port: 1883\n  qos: 2")),
     [(5, 8, "mqtt.qos: 2 is not allowed; expected one of 0, 1")]),
    ("out-of-range", edit(("unit: 1", "unit: 300")),
     [(10, 11, "devices[0].unit: 300 is out of range; allowed 0 to 255")]),
    ("duration-range", edit(("port: 1883", "port: 1883\n  keepalive: 2h")),
     [(5, 14, "mqtt.keepalive: '2h' (= 7200 s) is out of range; allowed 5 s to 3600 s")]),
    ("lower-bound-only", edit(("port: 1883", "port: 1883\n  reconnect_min: 0")),
     [(5, 18, "mqtt.reconnect_min: 0 is out of range; allowed more than 0 s")]),
    ("align-not-bool", edit(("interval: 5s", "interval: 5s\n    align: sometimes")),
     [(12, 12, "devices[0].align: expected true or false, got 'sometimes'")]),
    ("bad-duration", edit(("interval: 5s", "interval: 5 sec")),
     [(11, 15, "devices[0].interval: '5 sec' is not a duration")]),
    ("not-a-number", edit(("port: 1883", "port: http")),
     [(4, 9, "mqtt.port: expected a whole number, got 'http'")]),
    ("empty-host", edit(("host: broker.local", "host: ''")),
     [(3, 9, "mqtt.host: must not be empty")]),
    ("null-host", edit(("host: broker.local", "host:")),
     [(3, 3, "mqtt.host: expected text, got an empty value")]),
    ("name-pattern", edit(("{id: gw-1}", "{id: gw 1}")),
     [(1, 15, "gateway.id: 'gw 1' is not allowed; use letters, digits")]),
    ("topic-wildcard", edit(("port: 1883", "port: 1883\n  topic_prefix: city/#")),
     [(5, 17, "mqtt.topic_prefix: 'city/#' is not allowed; use topic levels")]),
    ("missing-key", edit(("    host: 10.0.0.5\n", "")),
     [(7, 5, "devices[0]: missing required key 'host'")]),
    ("missing-section", edit(("queue: {path: q.db}\n", "")),
     [(1, 1, "top level: missing required key 'queue'")]),
    ("unknown-driver", edit(("driver: modbus_tcp", "driver: modbus_tpc")),
     [(8, 13, "devices[0].driver: 'modbus_tpc' is not a known driver; known: modbus_tcp, "
              "modbus_rtu, modbus_ascii, serial_line (did you mean 'modbus_tcp'?)")]),
    ("missing-driver", edit(("    driver: modbus_tcp\n", "")),
     [(7, 5, "devices[0]: missing required key 'driver'")]),
    ("device-not-mapping", BASE + "  - just-a-name\n", [(15, 5, "devices[1]: expected a mapping")]),
    ("model-validator", edit(("{name: chlorine, address", "{name: chlorine, table: coil, address")),
     [(14, 9, "devices[0].points[1]: table coil holds bits: type must be bool")]),
    ("backoff-order", edit(("port: 1883", "port: 1883\n  reconnect_min: 2m")),
     [(3, 3, "mqtt: reconnect_min (120 s) must not exceed reconnect_max (60 s)")]),
    ("duplicate-device", BASE + "  - {name: plc, driver: modbus_tcp, host: h, points: [{name: a, "
     "address: 1}]}\n", [(15, 12, "devices[1].name: duplicate device name 'plc' (first used at "
                                  "line 7)")]),
    ("duplicate-point", edit(("name: chlorine", "name: turbidity")),
     [(14, 16, "devices[0].points[1].name: duplicate point name 'turbidity' (first used at "
               "line 13)")]),
    ("many-errors", edit(("port:", "prot:"), ("unit: 1", "unit: 300"),
                         ("interval: 5s", "interval: x"), ("type: float32", "type: flot32"),
                         ("name: chlorine", "name: turbidity")),
     [(4, 3, "mqtt.prot: unknown key"), (10, 11, "devices[0].unit: 300 is out of range"),
      (11, 15, "devices[0].interval: 'x' is not a duration"),
      (13, 47, "devices[0].points[0].type: 'flot32' is not allowed"),
      (14, 16, "duplicate point name 'turbidity'")]),
]


@pytest.mark.parametrize(("content", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_broken_config_is_reported_at_its_place(
    tmp_path: Path, content: str | bytes, expected: list[tuple[int, int, str]]
) -> None:
    path = tmp_path / "agent.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    issues = issues_of(str(path))
    got = [(i.line, i.col, i.message) for i in issues]
    assert len(issues) == len(expected), got
    for (line, col, text), issue in zip(expected, issues, strict=True):
        assert (issue.line, issue.col) == (line, col), got
        assert text in issue.message, got
        assert issue.file == str(path)
        assert str(issue).startswith(f"{path}:{line}:{col}: ")


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert isinstance(config, AgentConfig)
    assert config.gateway.id == "songdo-gw-017"
    assert config.gateway.site == "songdo-d3"
    mqtt = config.mqtt
    assert (mqtt.host, mqtt.port, mqtt.topic_prefix) == ("127.0.0.1", 1883, "city")
    assert config.mqtt.qos == 1
    assert config.mqtt.keepalive == 30.0
    assert config.queue.path == "/var/lib/edge-agent/queue.db"
    assert config.queue.synchronous == "full"
    assert config.log.level == "info"
    [device] = config.devices
    assert device.name == "intake-plc"
    assert device.driver == "modbus_tcp"
    assert device.interval == 5.0
    assert device.model_dump()["unit"] == 1
    turbidity, chlorine = device.model_dump()["points"]
    assert (turbidity["name"], turbidity["address"]) == ("turbidity", 100)
    assert turbidity["type"] == "float32"
    assert (chlorine["scale"], chlorine["unit"]) == (0.01, "mg/L")
    with pytest.raises(ValueError):  # frozen
        config.mqtt.port = 1  # type: ignore[misc]


def test_a_daily_read_aligned_to_local_midnight(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text(edit(("interval: 5s", "interval: 1d\n    align: true")))
    [device] = load_config(tmp_path / "agent.yaml").devices
    assert (device.interval, device.align) == (86_400.0, True)
    assert load_config(EXAMPLE).devices[0].align is False  # the default: every interval


def test_relative_queue_path_resolves_against_the_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "agent.yaml").write_text(edit(("{path: q.db}", "{path: ../data/q.db}")))
    monkeypatch.chdir(tmp_path)
    config = load_config("etc/agent.yaml")
    assert config.queue.path == str(tmp_path / "data" / "q.db")
    assert os.path.isabs(config.queue.path)


def test_anchors_aliases_and_merge_keys_are_fine(tmp_path: Path) -> None:
    text = """\
gateway: {id: gw-1}
mqtt: {host: &broker 10.0.0.1}
queue: {path: q.db}
devices:
  - &plc
    <<: {driver: modbus_tcp, interval: 2s, byte_order: CDAB}
    name: plc-1
    host: *broker
    points: &points [{name: level, address: 0}]
  - <<: *plc
    name: plc-2
    points: *points
"""
    (tmp_path / "a.yaml").write_text(text)
    config = load_config(tmp_path / "a.yaml")
    assert [d.name for d in config.devices] == ["plc-1", "plc-2"]
    for device in config.devices:
        dumped = device.model_dump()
        assert (dumped["host"], dumped["byte_order"], device.interval) == ("10.0.0.1", "CDAB", 2.0)
        assert [p["name"] for p in dumped["points"]] == ["level"]
    # a value merged in from elsewhere is reported at the mapping it was merged into
    (tmp_path / "b.yaml").write_text(text.replace("interval: 2s", "interval: 2x"))
    issues = issues_of(tmp_path / "b.yaml")
    assert [(i.line, i.col) for i in issues] == [(5, 5), (10, 5)]
    assert all("interval: '2x' is not a duration" in i.message for i in issues)


def test_unreadable_paths_are_located_at_line_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    [missing] = issues_of(tmp_path / "nope.yaml")
    assert (missing.line, missing.col) == (1, 1) and "no such file" in missing.message
    assert missing.file == str(tmp_path / "nope.yaml")
    [directory] = issues_of(tmp_path)
    assert (directory.line, directory.col) == (1, 1) and "directory" in directory.message
    locked = tmp_path / "locked.yaml"
    locked.write_text(BASE)
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make open() refuse instead

        def refuse(*_args: object, **_kwargs: object) -> None:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr("agent.config.yaml.read_bounded", refuse)
    [denied] = issues_of(locked)
    assert (denied.line, denied.col) == (1, 1) and "permission denied" in denied.message


def test_json_schema_describes_every_section() -> None:
    schema = json_schema()
    assert set(schema["required"]) == {"gateway", "mqtt", "queue"}  # devices: or devices.d
    mqtt = schema["$defs"]["MqttConfig"]["properties"]
    assert all("description" in field for field in mqtt.values())


def _assert_only_config_errors(content: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "agent.yaml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", errors="surrogatepass")
        try:
            load_config(path)
        except ConfigError as exc:
            assert exc.issues
            for issue in exc.issues:
                assert issue.line >= 1 and issue.col >= 1, issue
                assert issue.file == str(path)


YAMLISH = st.text(alphabet=st.sampled_from(list("ab1-_:{}[],&*!|>'\"#?%@\n\t .<")), max_size=200)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(), YAMLISH))
def test_arbitrary_text_raises_only_config_error(text: str) -> None:
    _assert_only_config_errors(text)


@settings(max_examples=300, deadline=None)
@given(st.binary())
def test_arbitrary_bytes_raise_only_config_error(blob: bytes) -> None:
    _assert_only_config_errors(blob)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutated_example_raises_only_config_error(data: st.DataObject) -> None:
    text = EXAMPLE.read_text()
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 3))
        text = text[:at] + data.draw(st.text(max_size=3)) + text[at + cut:]
    _assert_only_config_errors(text)
