"""The `edge-agent` command line: run, check, demo.

Exit codes: 0 success; 1 failure (including `check` finding errors); 2 `run` refused an invalid
config (systemd does not restart on 2). User mistakes are printed as messages, never tracebacks.
"""

from __future__ import annotations

import argparse
import sys

from agent import __version__


def _check(path: str) -> int:
    from agent.config import load_config
    from agent.errors import ConfigError

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        print(f"{path}: {len(exc.issues)} error(s)", file=sys.stderr)
        return 1
    points = sum(len(getattr(d, "points", [])) for d in cfg.devices)
    print(f"{path}: ok: gateway {cfg.gateway.id}, {len(cfg.devices)} device(s), "
          f"{points} point(s), broker {cfg.mqtt.host}:{cfg.mqtt.port}, queue {cfg.queue.path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="poll devices and forward readings until stopped")
    p_run.add_argument("-c", "--config", required=True, help="path to agent.yaml")
    p_check = sub.add_parser("check", help="validate a config file and summarize it")
    p_check.add_argument("-c", "--config", required=True, help="path to agent.yaml")
    p_demo = sub.add_parser("demo", help="simulated PLC + local broker + agent, live output")
    p_demo.add_argument("--duration", type=float, default=None,
                        help="stop after this many seconds (default: until Ctrl-C)")
    args = parser.parse_args(argv)

    if args.command == "run":
        from agent.runtime import run

        return run(args.config)
    if args.command == "check":
        return _check(args.config)
    from agent.demo import run_demo

    return run_demo(args.duration)


if __name__ == "__main__":
    sys.exit(main())
