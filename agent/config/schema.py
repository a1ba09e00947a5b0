"""JSON Schemas of the config files, generated from the config models, for editors.

With them, VS Code (the YAML extension), vim/neovim (yaml-language-server) and other editors
autocomplete keys, show each key's description and underline mistakes before a file reaches
the gateway. Three files in config/schemas: `agent.schema.json` (agent.yaml),
`device.schema.json` (one devices.d file) and `profile.schema.json` (a sensor profile). They are
generated, never edited: `python -m agent.config.schema` rewrites them, `--check` says whether
they are current (a test runs it). Points are not required on a device here, since a profile
may supply them; and a number written as `${VAR}` is flagged by editors though the agent takes
it (the loader substitutes first).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, TypeAdapter

from agent.config.load import AgentConfig, AnyDevice
from agent.config.profiles import NOT_IN_PROFILE, shipped
from drivers.registry import CONFIG_MODELS

DIALECT = "https://json-schema.org/draft/2020-12/schema"
SCHEMAS = Path(shipped("schemas"))
"""config/schemas, shipped as package data beside the profiles."""
_BOUNDS = {"ge": "minimum", "gt": "exclusiveMinimum", "le": "maximum", "lt": "exclusiveMaximum"}


def _tidy(node: Any) -> Any:
    """pydantic leaves the bounds of a Duration/ByteSize (a number or a string with a unit)
    as unknown `ge`/`gt`/...: put them on the number branch where editors check them."""
    if isinstance(node, list):
        return [_tidy(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _tidy(v) for k, v in node.items()}
    bounds = {k: node.pop(k) for k in list(node) if k in _BOUNDS}
    for branch in node.get("anyOf", []) if bounds else []:
        if branch.get("type") in ("number", "integer"):
            if "ge" in bounds or "gt" in bounds:
                branch.pop("minimum", None)
            branch.update({_BOUNDS[k]: v for k, v in bounds.items()})
    return node


def _models(model: type[BaseModel], seen: dict[str, type[BaseModel]]) -> dict[str, type[BaseModel]]:
    """Every model reachable from `model`'s fields, by class name (pydantic's $defs keys)."""
    if model.__name__ not in seen:
        seen[model.__name__] = model
        for field in model.model_fields.values():
            for sub in _nested(field.annotation):
                _models(sub, seen)
    return seen


def _nested(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for a in get_args(annotation) for m in _nested(a)]


def _field_bounds(defs: dict[str, Any], roots: list[type[BaseModel]]) -> None:
    """Range limits of Duration/ByteSize fields, which pydantic leaves out of the schema,
    put on their number branch where editors check them."""
    seen: dict[str, type[BaseModel]] = {}
    for root in roots:
        _models(root, seen)
    for name, model in seen.items():
        props = defs.get(name, {}).get("properties", {})
        for key, field in model.model_fields.items():
            bounds = {k: getattr(m, k) for m in field.metadata for k in _BOUNDS
                      if hasattr(m, k) and type(m).__name__.lower() == k}
            prop = props.get(key, {})
            branches = prop.get("anyOf", [])
            if bounds and any(b.get("type") == "string" for b in branches):
                prop.update(bounds)  # _tidy moves them onto the number branch


def _devices_optional_points(defs: dict[str, Any]) -> None:
    for name, model in CONFIG_MODELS.items():
        d = defs.get(model.__name__, {})
        if "profile" in d.get("properties", {}) and "points" in d.get("required", []):
            d["required"] = [r for r in d["required"] if r != "points"]
            d["properties"]["points"]["description"] = (
                f"{name} points (may come from the profile instead)")


def _document(schema: dict[str, Any], name: str, title: str) -> dict[str, Any]:
    _devices_optional_points(schema.get("$defs", {}))
    _field_bounds(schema.get("$defs", {}), [AgentConfig, *CONFIG_MODELS.values()])
    head: dict[str, Any] = {"$schema": DIALECT,
                            "$id": f"https://city-edge-agent/schemas/{name}", "title": title}
    body: dict[str, Any] = _tidy({k: v for k, v in schema.items() if k != "title"})
    return head | body


def agent_schema() -> dict[str, Any]:
    return _document(AgentConfig.model_json_schema(), "agent.schema.json",
                     "city-edge-agent agent.yaml")


def device_schema() -> dict[str, Any]:
    return _document(TypeAdapter(AnyDevice).json_schema(), "device.schema.json",
                     "city-edge-agent devices.d file (one device)")


def profile_schema() -> dict[str, Any]:
    """A profile is a device of some driver without identity or wiring, every key optional."""
    device = device_schema()
    defs = device["$defs"]
    variants = []
    for name, model in CONFIG_MODELS.items():
        d = defs[model.__name__]
        props = {k: v for k, v in d["properties"].items() if k not in NOT_IN_PROFILE}
        props["description"] = {"type": "string", "description": "what sensor model this is"}
        defs[f"{model.__name__}Profile"] = {
            "type": "object", "additionalProperties": False, "properties": props,
            "description": f"a profile for {name} devices"}
        variants.append({"$ref": f"#/$defs/{model.__name__}Profile"})
    return {"$schema": DIALECT, "$id": "https://city-edge-agent/schemas/profile.schema.json",
            "title": "city-edge-agent sensor profile", "$defs": defs, "anyOf": variants}


def schemas() -> dict[str, dict[str, Any]]:
    """file name -> schema, for every config file kind."""
    return {"agent.schema.json": agent_schema(), "device.schema.json": device_schema(),
            "profile.schema.json": profile_schema()}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def stale(folder: Path = SCHEMAS) -> list[str]:
    """Schema files in `folder` that differ from what the code generates."""
    out = []
    for name, schema in schemas().items():
        path = folder / name
        if not path.exists() or path.read_text(encoding="utf-8") != render(schema):
            out.append(name)
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--check" in args:
        old = stale()
        for name in old:
            print(f"config/schemas/{name} is out of date with the config models; regenerate: "
                  ".venv/bin/python -m agent.config.schema", file=sys.stderr)
        return 1 if old else 0
    for name, schema in schemas().items():
        (SCHEMAS / name).write_text(render(schema), encoding="utf-8")
        print(f"wrote config/schemas/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
