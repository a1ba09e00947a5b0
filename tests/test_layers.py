"""The package map stays true: imports point one way, and no module imports itself in a circle.

Every import in `agent/` and `drivers/` counts, wherever it stands (module top, inside a
function, under `TYPE_CHECKING`): a back-edge written only for a type is still a circle a reader
has to untangle. The layers, lowest first (README, Development):

    core < transport < drivers < config < queue < polling, uplink < service < sim < cli

A module may import its own package and any lower layer; `polling` and `uplink` are side by
side and do not import each other. Drivers import only `agent.core`, `agent.transport` and
`drivers`. Nothing on the runtime path imports `agent.sim` (only the `demo` command does).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

from tests.support import ROOT

LAYERS: dict[str, int] = {
    "agent": 0,  # agent/__init__.py: the version only
    "agent.core": 0,
    "agent.transport": 1,
    "drivers": 2,
    "agent.config": 3,
    "agent.queue": 4,
    "agent.polling": 5,
    "agent.uplink": 5,
    "agent.service": 6,
    "agent.sim": 7,
    "agent.cli": 8,
}
DRIVERS_MAY_IMPORT = ("agent.core", "agent.transport", "drivers")


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for top in ("agent", "drivers") for p in (ROOT / top).rglob("*.py")}


def imports_of(path: Path, known: Iterable[str]) -> set[str]:
    """Our modules that `path` imports, anywhere in it (`from pkg import mod` names mod)."""
    known = set(known)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] in ("agent", "drivers"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] not in ("agent", "drivers"):
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, mods) for name, path in mods.items()}


def layer_of(module: str) -> str:
    best = max((k for k in LAYERS if module == k or module.startswith(k + ".")), key=len)
    return best


def violations(edges: Mapping[str, Iterable[str]]) -> list[str]:
    """Every import against the layer order, as `importer -> imported (why)`."""
    out: list[str] = []
    for src, targets in sorted(edges.items()):
        ls = layer_of(src)
        for dst in sorted(targets):
            ld = layer_of(dst)
            if ls == ld:
                continue
            if ls == "drivers" and not dst.startswith(DRIVERS_MAY_IMPORT):
                out.append(f"{src} -> {dst} (drivers import only {', '.join(DRIVERS_MAY_IMPORT)})")
            elif LAYERS[ld] >= LAYERS[ls]:
                out.append(f"{src} -> {dst} ({ld} is not below {ls})")
    return out


def cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), or a self-import."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in edges.get(v, ()):
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_is_in_a_layer() -> None:
    assert all(layer_of(m) in LAYERS for m in modules())
    assert {m.split(".")[1] for m in modules() if m.startswith("agent.")} <= {
        k.split(".")[1] for k in LAYERS if k.startswith("agent.")}


def test_imports_point_down_the_layers() -> None:
    assert violations(graph()) == []


def test_the_checks_catch_a_back_edge() -> None:
    """The checker itself can fail: a core module importing the service, and a circle."""
    edges = graph()
    back = {**edges, "agent.core.model": {*edges["agent.core.model"], "agent.service.runtime"}}
    assert "agent.core.model -> agent.service.runtime (agent.service is not below agent.core)" \
        in violations(back)
    assert any("agent.core.model" in c and "agent.service.runtime" in c for c in cycles(back))
    sideways = {**edges, "agent.polling.runner": {"agent.uplink.forwarder"}}
    assert violations(sideways) == [
        "agent.polling.runner -> agent.uplink.forwarder (agent.uplink is not below agent.polling)"]
    driver = {**edges, "drivers.base": {"agent.config.load"}}
    assert any(v.startswith("drivers.base -> agent.config.load (drivers import only")
               for v in violations(driver))


def test_no_module_imports_itself_in_a_circle() -> None:
    assert cycles(graph()) == []
