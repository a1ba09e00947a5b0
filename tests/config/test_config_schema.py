"""The JSON Schemas editors use: in sync with the models, accepting every shipped example, and
catching the typos the loader catches."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from ruamel.yaml import YAML

from agent.config import schema as config_schema
from agent.config.load import load_config

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"


@functools.cache
def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((CONFIG / "schemas" / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _yaml(path: Path) -> Any:
    return YAML(typ="safe").load(path.read_text())


def _errors(validator: jsonschema.Draft202012Validator, doc: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]


def test_shipped_schemas_match_the_config_models() -> None:
    assert config_schema.stale() == [], (
        "config/schemas is out of date with the config models: run "
        ".venv/bin/python -m agent.config.schema and commit the result")
    assert config_schema.main(["--check"]) == 0


def test_a_changed_schema_file_is_detected(tmp_path: Path) -> None:
    for name, schema in config_schema.schemas().items():
        (tmp_path / name).write_text(config_schema.render(schema))
    assert config_schema.stale(tmp_path) == []
    doc = json.loads((tmp_path / "device.schema.json").read_text())
    doc["title"] = "edited by hand"
    (tmp_path / "device.schema.json").write_text(json.dumps(doc))
    assert config_schema.stale(tmp_path) == ["device.schema.json"]


@pytest.mark.parametrize("name", [p.name for p in sorted(CONFIG.glob("*.yaml"))]
                         + ["site/agent.yaml"])
def test_example_configs_pass_schema_and_loader(name: str) -> None:
    load_config(CONFIG / name)
    assert _errors(_validator("agent.schema.json"), _yaml(CONFIG / name)) == []


def test_example_devices_and_profiles_pass_their_schemas() -> None:
    devices = sorted((CONFIG / "site" / "devices.d").glob("*.yaml"))
    profiles = sorted((CONFIG / "profiles").glob("*.yaml")) + sorted(
        (CONFIG / "site" / "profiles").glob("*.yaml"))
    assert len(devices) >= 3 and len(profiles) >= 6
    for path in devices:
        assert _errors(_validator("device.schema.json"), _yaml(path)) == [], path
    for path in profiles:
        assert _errors(_validator("profile.schema.json"), _yaml(path)) == [], path


def test_schema_underlines_what_the_loader_refuses() -> None:
    agent = _validator("agent.schema.json")
    doc = _yaml(CONFIG / "agent.yaml")
    doc["mqtt"]["prot"] = 1883
    doc["queue"]["max_bytes"] = "512 MBs"
    doc["devices"][0]["interval"] = "5 sec"
    found = _errors(agent, doc)
    assert any(e.startswith("mqtt: Additional properties") and "'prot'" in e for e in found)
    assert any(e.startswith("queue/max_bytes:") for e in found)
    assert any(e.startswith("devices/0") for e in found)
    device = _validator("device.schema.json")
    assert _errors(device, {"name": "ph", "driver": "modbus_rtu", "bus": "b", "profile": "p"}) == []
    bad = {"name": "ph", "driver": "modbus_rtu", "bus": "b", "unit": 300,
           "points": [{"name": "t", "address": 0, "type": "flot32"}]}
    assert _errors(device, bad)
    assert _errors(device, {**bad, "driver": "modbus_rtx"})
    profile = _validator("profile.schema.json")
    assert _errors(profile, {"points": [{"name": "a", "address": 0}], "unit": 3})  # wiring
    assert _errors(profile, {"points": [{"name": "a", "address": 0}], "max_gap": "x"})
    assert _errors(profile, {"points": [{"name": "a", "address": 0}], "byte_order": "CDAB"}) == []


def test_duration_bounds_reach_the_number_branch() -> None:
    keepalive = config_schema.agent_schema()["$defs"]["MqttConfig"]["properties"]["keepalive"]
    number = next(b for b in keepalive["anyOf"] if b["type"] == "number")
    assert (number["minimum"], number["maximum"]) == (5, 3600)
    assert "ge" not in keepalive and "le" not in keepalive
