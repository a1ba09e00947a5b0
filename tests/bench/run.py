"""The benchmark runner: `python -m tests.bench.run [SCENARIO ...] [--quick]`.

Each scenario runs the real agent (real queue file, real Mosquitto on a free port, real pymodbus
servers, a pty null-modem for RTU and a pty text sensor) and measures the raw parts beside it in
the same run; the runner prints a table and writes every figure as JSON to
tests/bench/results/latest.json (and a timestamped copy). A figure measured several times is
shown as median (min-max). Figures are never asserted in the unit tests: the machine is shared
and noisy, so compare ratios measured in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench import clock, footprint, throughput

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "pipeline": throughput.pipeline,
    "drain": throughput.drain,
    "modbus": throughput.modbus,
    "site": footprint.site,
    "latency": footprint.latency,  # from the site run when both run
    "idle": footprint.idle,
    "backlog_memory": footprint.backlog_memory,
    "clock": clock.clock,
}
ALIASES = {"queue_rss": "backlog_memory"}


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal:"))
    import sqlite3

    import paho.mqtt
    import pymodbus

    return {"cpus": os.cpu_count(), "cpu": model, "arch": platform.machine(),
            "memory_gb": round(mem / 2**20, 1), "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version, "paho_mqtt": paho.mqtt.__version__,
            "pymodbus": pymodbus.__version__, "load_at_start": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run")
    parser.add_argument("scenario", nargs="*", choices=[[], *SCENARIOS, *ALIASES], default=[],
                        help=f"default: all ({', '.join(SCENARIOS)})")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    names = [ALIASES.get(n, n) for n in args.scenario] or list(SCENARIOS)
    started = time.monotonic()
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(), "quick": args.quick, "scenarios": {},
    }
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        results["scenarios"][name] = SCENARIOS[name](args.quick)
        print(f"  {name}: {time.monotonic() - t0:.0f} s", file=sys.stderr, flush=True)
    results["duration_s"] = round(time.monotonic() - started)
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(results, indent=2)
    (RESULTS / "latest.json").write_text(text)
    (RESULTS / f"bench-{results['when'].replace(':', '')}.json").write_text(text)
    print(table(results))
    print(f"\n{results['duration_s']} s; results: {RESULTS / 'latest.json'}")
    return 0


def shown(value: Any) -> str:
    if isinstance(value, dict) and "median" in value:
        return f"{shown(value['median'])} ({shown(value['min'])}-{shown(value['max'])})"
    if isinstance(value, float):
        return f"{value:,.{0 if value >= 1000 else 2}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(results: dict[str, Any]) -> str:
    rows = [("scenario", "figure", "value")]
    for name, figures in results["scenarios"].items():
        rows += [(name, key, shown(value)) for key, value in figures.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
