"""The benchmark runner: `python -m tests.bench.run [SCENARIO ...] [--quick]`.

Each scenario runs the real agent (real queue file, real Mosquitto on a free port, real pymodbus
server) and returns its figures; the runner prints a table and writes every figure as JSON to
tests/bench/results/latest.json (and a timestamped copy). Figures are never asserted in the unit
tests: the machine is shared and noisy, so compare ratios measured in one run.
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

from tests.bench import scenarios

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "pipeline": scenarios.pipeline,
    "modbus": scenarios.modbus,
    "queue_rss": scenarios.queue_rss,
    "drain": scenarios.drain,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.run")
    parser.add_argument("scenario", nargs="*", choices=[[], *SCENARIOS], default=[],
                        help=f"default: all ({', '.join(SCENARIOS)})")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    args = parser.parse_args(argv)
    names = args.scenario or list(SCENARIOS)
    results: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "arch": platform.machine(),
                    "python": platform.python_version()},
        "quick": args.quick, "scenarios": {},
    }
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results["scenarios"][name] = SCENARIOS[name](args.quick)
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(results, indent=2)
    (RESULTS / "latest.json").write_text(text)
    (RESULTS / f"bench-{results['when'].replace(':', '')}.json").write_text(text)
    print(table(results))
    print(f"\nresults: {RESULTS / 'latest.json'}")
    return 0


def table(results: dict[str, Any]) -> str:
    rows = [("scenario", "figure", "value")]
    for name, figures in results["scenarios"].items():
        for key, value in figures.items():
            shown = f"{value:,.3f}" if isinstance(value, float) else f"{value:,}" \
                if isinstance(value, int) else str(value)
            rows.append((name, key, shown))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in
                       enumerate(zip(r, widths, strict=True))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
