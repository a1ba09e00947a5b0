"""The systemd unit and systemd/install.sh, checked with systemd's own tools.

`install.sh --root DIR` runs for real in a throwaway root seeded like a fresh Raspberry Pi OS
(/etc/passwd and /etc/group with `dialout`): it makes the user with systemd-sysusers, a real
virtual environment with the agent pip-installed from this checkout, the config, the unit and
its enable link. Then a second run upgrades in place (config and queue kept), and the
uninstall keeps the queue unless --purge. `systemd-analyze verify` checks the installed unit
(rendered for the throwaway root, so that its commands are the installed ones) and
`systemd-analyze security --offline=yes` rates the shipped unit. Without systemd as PID 1 the
sandbox itself is not run here; what serial ports and the network need is checked in the
unit's settings instead.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.core.model import Reading, now_ms
from agent.queue import Queue
from tests.support import ROOT

UNIT = ROOT / "systemd" / "edge-agent.service"
INSTALL = ROOT / "systemd" / "install.sh"
EXPOSURE_MAX = 2.0


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if path is None:
        pytest.fail(f"{name} not found: apt-get install -y systemd passwd (or bash .ci/setup)")
    return path


def _settings(text: str) -> dict[str, list[str]]:
    """Unit file keys of [Service] and [Unit], every assignment kept in order."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_unit_is_rated_2_or_better_by_systemd_analyze_security() -> None:
    proc = subprocess.run([_tool("systemd-analyze"), "security", "--offline=yes", str(UNIT)],
                          capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for edge-agent\.service: (\d+\.\d)", proc.stdout)
    assert match, proc.stdout + proc.stderr
    print(f"exposure {match.group(1)}")  # -rP shows it
    assert float(match.group(1)) <= EXPOSURE_MAX, proc.stdout


def test_unit_keeps_serial_ports_network_and_the_service_protocol() -> None:
    s = _settings(UNIT.read_text())
    # what the agent's work needs, kept by the hardening
    assert s["SupplementaryGroups"] == ["dialout"] and s["DevicePolicy"] == ["closed"]
    assert {"char-ttyUSB rw", "char-ttyACM rw", "char-ttyAMA rw", "char-ttyS rw"} <= set(
        s["DeviceAllow"])
    assert "PrivateDevices" not in s and "PrivateNetwork" not in s and "IPAddressDeny" not in s
    assert set(s["RestrictAddressFamilies"][0].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    # agent.clock reads the NTP state with adjtimex (read-only without CAP_SYS_TIME);
    # ProtectClock= would forbid the call itself
    assert s["SystemCallFilter"][-1] == "adjtimex" and "ProtectClock" not in s
    assert s["CapabilityBoundingSet"] == [""] and s["SystemCallErrorNumber"] == ["EPERM"]
    assert s["StateDirectory"] == ["edge-agent"] and s["ProtectSystem"] == ["strict"]
    # the service protocol
    assert s["Type"] == ["notify"] and s["NotifyAccess"] == ["main"]
    assert s["WatchdogSec"] and s["Restart"] == ["on-failure"] and s["RestartSec"]
    assert s["ExecStartPre"] == ["/opt/edge-agent/venv/bin/edge-agent check -c "
                                 "/etc/edge-agent/agent.yaml"]
    assert s["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    assert s["RestartPreventExitStatus"] == ["2"] and s["User"] == ["edge-agent"]


def _install(root: Path, *args: str) -> str:
    proc = subprocess.run(["bash", str(INSTALL), "--root", str(root), *args],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _user(root: Path, name: str) -> list[str] | None:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    return None


def _group(root: Path, name: str) -> list[str] | None:
    for line in (root / "etc" / "group").read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    return None


def test_install_upgrade_and_uninstall_in_a_throwaway_root(tmp_path: Path) -> None:
    _tool("systemd-sysusers"), _tool("userdel"), _tool("groupdel")
    analyze = _tool("systemd-analyze")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)  # a fresh system: root, and the dialout group
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (root / "etc" / "group").write_text("root:x:0:\ndialout:x:20:\n")

    out = _install(root)
    assert "installed the example site config" in out
    user = _user(root, "edge-agent")
    assert user is not None and user[5:] == ["/var/lib/edge-agent", "/usr/sbin/nologin"]
    group, dialout = _group(root, "edge-agent"), _group(root, "dialout")
    assert group is not None and dialout is not None and dialout[3] == "edge-agent"
    unit = root / "etc/systemd/system/edge-agent.service"
    assert unit.read_text() == UNIT.read_text()
    wants = root / "etc/systemd/system/multi-user.target.wants/edge-agent.service"
    assert wants.readlink() == Path("/etc/systemd/system/edge-agent.service")  # enabled
    assert (root / "usr/local/bin/edge-agent").readlink() == Path(
        "/opt/edge-agent/venv/bin/edge-agent")
    assert (root / "usr/lib/sysusers.d/edge-agent.conf").exists()
    etc = root / "etc/edge-agent"
    config = etc / "agent.yaml"
    assert config.read_text() == (ROOT / "config/site/agent.yaml").read_text()
    assert (etc.stat().st_mode & 0o777, config.stat().st_mode & 0o777) == (0o750, 0o640)
    assert (config.stat().st_uid, config.stat().st_gid) == (0, int(group[2]))
    agent = root / "opt/edge-agent/venv/bin/edge-agent"
    check = subprocess.run([str(agent), "check", "-c", str(config)], capture_output=True,
                           text=True, timeout=60)  # the installed agent, shipped profiles found
    assert check.returncode == 0 and "3 device(s)" in check.stdout, check.stdout + check.stderr

    # systemd's own check of the unit as installed (its commands pointed into the root)
    rendered = tmp_path / "verify" / "edge-agent.service"
    rendered.parent.mkdir()
    rendered.write_text(unit.read_text().replace("/opt/edge-agent/", f"{root}/opt/edge-agent/"))
    verify = subprocess.run([analyze, "verify", str(rendered)], capture_output=True, text=True,
                            timeout=60)
    assert verify.returncode == 0 and not verify.stdout + verify.stderr, verify.stderr

    # upgrade in place: the technician's config and the queue stay
    config.write_text(config.read_text() + "# edited on site\n")
    state = root / "var/lib/edge-agent"
    state.mkdir(parents=True)
    q = Queue(state / "queue.db")
    q.put([Reading("plc", "level", 1.5, "m", now_ms())] * 3)
    q.close()
    out = _install(root)
    assert "kept your config" in out
    assert config.read_text().endswith("# edited on site\n")
    assert "Successfully installed city-edge-agent" in (
        root / "opt/edge-agent/pip-install.log").read_text()
    assert agent.exists() and unit.read_text() == UNIT.read_text()

    def depth() -> int:
        q = Queue(state / "queue.db")
        try:
            return q.stats().depth
        finally:
            q.close()

    assert depth() == 3

    _install(root, "--uninstall")
    for gone in (unit, wants, root / "opt/edge-agent", etc, root / "usr/local/bin/edge-agent",
                 root / "usr/lib/sysusers.d/edge-agent.conf"):
        assert not gone.exists() and not gone.is_symlink(), gone
    assert depth() == 3 and _user(root, "edge-agent") is not None  # the queue and its owner

    _install(root, "--uninstall", "--purge")
    assert not state.exists() and _user(root, "edge-agent") is None
    assert _group(root, "edge-agent") is None and _group(root, "dialout") == [
        "dialout", "x", "20", ""]
