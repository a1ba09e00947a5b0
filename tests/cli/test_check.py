"""`edge-agent check`: the summary a technician reads against the installation, or every error."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

from agent.cli.check import check
from tests.peers.disk import mount_tmpfs, unmount
from tests.support import EDGE_AGENT

ROOT = Path(__file__).resolve().parents[2]
HEAD = """gateway: {id: gw-1}
mqtt: {host: broker.local}
queue: {path: q.db}
buses:
  - {name: slow, port: /dev/ttyUSB0, baudrate: 1200}
"""


def run(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = check(str(path), out, err)
    return code, out.getvalue(), err.getvalue()


def test_site_example_summary() -> None:
    code, out, err = run(ROOT / "config" / "site" / "agent.yaml")
    assert code == 0, err
    assert "+ 3 in devices.d/" in out
    assert "3 device(s), 8 point(s), 1 bus(es), 3 request(s) per cycle" in out
    assert "intake-flow    modbus_rtu  rs485-1 unit 7  30s    3       1         site_flow_meter" \
        in out


def test_requests_per_cycle_follow_the_read_plan_and_busy_lines_warn(tmp_path: Path) -> None:
    far = [{"name": f"p{i}", "address": i * 100, "type": "float32"} for i in range(3)]
    near = [{"name": f"q{i}", "address": i * 2, "type": "float32"} for i in range(60)]
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(HEAD + "devices:\n"
                   f"  - {{name: far, driver: modbus_rtu, bus: slow, unit: 1, interval: 1s, "
                   f"points: {far}}}\n"
                   f"  - {{name: near, driver: modbus_rtu, bus: slow, unit: 2, interval: 1s, "
                   f"points: {near}}}\n"
                   f"  - {{name: off, driver: modbus_rtu, bus: slow, unit: 3, enabled: false, "
                   f"points: {far}}}\n")
    code, out, err = run(cfg)
    assert code == 0, err
    # 3 points 100 registers apart: 3 reads; 60 adjacent float32s = 120 registers: 1 read
    assert "2 device(s) (+1 disabled), 63 point(s), 1 bus(es), 4 request(s) per cycle" in out
    busy = next(line for line in out.splitlines() if line.startswith("  bus slow"))
    # 120 registers at 1200 baud take ~2.3 s of line time per 1 s cycle
    assert "4.0 request(s)/s" in busy and "warning: polls will slip" in busy


def test_errors_exit_1_with_a_count(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(HEAD + "devices:\n  - {name: x, driver: modbus_rtu, bus: slowe, points: []}\n")
    code, out, err = run(cfg)
    assert (code, out) == (1, "")
    assert f"{cfg}:7:40: devices[0].bus: unknown bus 'slowe'" in err
    assert err.rstrip().endswith(f"{cfg}: 2 error(s)")


def test_min_free_that_leaves_less_than_an_hour_of_readings_is_warned(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    mount_tmpfs(disk, "20m")  # a small SD card's data partition
    try:
        def summary(queue: str, points: int, interval: str) -> str:
            cfg = tmp_path / "agent.yaml"
            pts = [{"name": f"p{i}", "address": i} for i in range(points)]
            cfg.write_text(f"gateway: {{id: gw-1}}\nmqtt: {{host: broker.local}}\n"
                           f"queue: {queue}\ndevices:\n  - {{name: plc, driver: modbus_tcp, "
                           f"host: 10.0.0.5, interval: {interval}, points: {pts}}}\n")
            code, out, err = run(cfg)
            assert code == 0, err
            return out

        default = summary(f"{{path: {disk}/q.db}}", 10, "1s")  # min_free 100 MB > the disk
        assert "queue: warning: queue.min_free (100 MB) leaves room for no time at all" \
            in default and "lower queue.min_free" in default
        small = f"{{path: {disk}/sub/q.db, min_free: 1MB}}"  # a folder not made yet
        assert "queue: warning" not in summary(small, 10, "1s")  # ~3 MB an hour: fits
        busy = summary(small, 100, "100ms")  # 1,000 readings/s, ~288 MB an hour
        assert "leaves room for only ~" in busy and "of readings an hour" in busy
    finally:
        unmount(disk)


def test_check_from_the_configs_own_folder_with_a_bare_file_name(tmp_path: Path) -> None:
    """`cd /etc/edge-agent && edge-agent check -c agent.yaml`: the README's own form."""
    shutil.copy(ROOT / "config" / "agent.yaml", tmp_path / "agent.yaml")
    proc = subprocess.run([*EDGE_AGENT, "check", "-c", "agent.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("agent.yaml: ok") and "Traceback" not in proc.stderr
