"""The wheel alone is the agent: built from a copy of the sources and unpacked outside the
checkout, it has every package, and finds its shipped profiles, JSON Schemas and status page
files as package data (`agent.config.shipped` is the repository's config/ folder)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from tests.support import ROOT

INSIDE = """
import json, sys
from pathlib import Path

import agent
from agent.cli.main import main
from agent.config import schema
from agent.config.profiles import SHIPPED, find, profile_dirs
from agent.service.status_page import FILES, STATIC

site = Path(sys.argv[1])
checked = main(["check", "-c", sys.argv[2]])  # the example site config: shipped profiles
_, known = find("no_such_sensor", profile_dirs(sys.argv[3]))
print(json.dumps({
    "agent": agent.__file__,
    "from_checkout": sorted(m.__name__ for m in list(sys.modules.values())
                            if (getattr(m, "__file__", None) or "").startswith(
                                tuple(sys.argv[4].split(",")))),
    "shipped": SHIPPED,
    "profiles": sorted(p.name for p in Path(SHIPPED).glob("*.yaml")),
    "known": known,
    "schema_dir": str(schema.SCHEMAS),
    "schemas": {p.name: sorted(json.loads(p.read_text())) for p in schema.SCHEMAS.glob("*.json")},
    "stale": schema.stale(),
    "status_page": {f: len((STATIC / f).read_bytes()) for f, _ in FILES.values()},
    "static": str(STATIC),
    "check": checked,
}))
"""


def _built(tmp_path: Path) -> Path:
    """The wheel, built the way install.sh builds it: from a copy of what it needs."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("agent", "drivers", "config"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                           str(out), str(src)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("*.whl")
    return wheel


def test_wheel_alone_finds_its_profiles_schemas_and_status_page(tmp_path: Path) -> None:
    wheel = _built(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    code = {p.relative_to(ROOT).as_posix() for top in ("agent", "drivers")
            for p in (ROOT / top).rglob("*.py")}
    assert code <= names, f"packages missing from pyproject.toml: {sorted(code - names)}"
    data = {n for n in names if not n.endswith(".py") and ".dist-info/" not in n}
    assert data == {
        "agent/py.typed",
        *(f"agent/config/shipped/profiles/{p.name}" for p in (ROOT / "config/profiles").iterdir()),
        *(f"agent/config/shipped/schemas/{p.name}" for p in (ROOT / "config/schemas").iterdir()),
        *(f"agent/service/status_page_files/{p.name}"
          for p in (ROOT / "agent/service/status_page_files").iterdir()),
    }, "only the declared package data: not the example configs"

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # -S: no .pth files, so not the editable install's finder; the dependencies come from this
    # venv's site-packages, the agent from the unpacked wheel only; cwd outside the checkout
    deps = sysconfig.get_paths()["purelib"]
    env = {"PYTHONPATH": f"{site}:{deps}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-S", "-c", INSIDE, str(site), str(ROOT / "config/site/agent.yaml"),
         str(elsewhere), ",".join(f"{ROOT / d}/" for d in ("agent", "drivers", "config"))],
        cwd=elsewhere, env=env, capture_output=True, text=True,
        timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.splitlines()[-1])
    assert got["check"] == 0 and "3 device(s)" in proc.stdout, proc.stdout + proc.stderr
    assert got["from_checkout"] == []
    assert got["agent"] == f"{site}/agent/__init__.py"
    profiles = sorted(p.name for p in (ROOT / "config/profiles").glob("*.yaml"))
    assert got["shipped"] == f"{site}/agent/config/shipped/profiles"
    assert got["profiles"] == profiles
    assert got["known"] == [p.removesuffix(".yaml") for p in profiles]
    assert got["schema_dir"] == f"{site}/agent/config/shipped/schemas"
    assert sorted(got["schemas"]) == sorted(p.name for p in (ROOT / "config/schemas").iterdir())
    assert all("$schema" in keys for keys in got["schemas"].values())
    assert got["stale"] == []  # the packaged schemas are the models' own
    assert got["static"] == f"{site}/agent/service/status_page_files"
    assert sorted(got["status_page"]) == ["app.css", "app.js", "index.html"]
    assert all(size > 0 for size in got["status_page"].values())
