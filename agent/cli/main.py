"""The `edge-agent` command line: run, check, status, probe, scan, queue, demo.

Exit codes: 0 success; 1 failure (including `check` finding errors); 2 `run` refused an invalid
config (systemd does not restart on 2). User mistakes are printed as messages, never tracebacks.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from agent import __version__

DEMO_EXTRA = "city-edge-agent[demo]"
"""What to install for `edge-agent demo`: the agent never needs pymodbus, its simulator does."""


def _check(path: str) -> int:
    from agent.cli.check import check

    return check(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-agent", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"edge-agent {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="poll devices and forward readings until stopped")
    p_run.add_argument("-c", "--config", required=True, help="path to agent.yaml")
    p_check = sub.add_parser("check", help="validate a config file and summarize it")
    p_check.add_argument("-c", "--config", required=True, help="path to agent.yaml")
    p_status = sub.add_parser("status", help="what the running agent is doing: devices, "
                              "queue, uplink, last reload")
    p_status.add_argument("-c", "--config", required=True, help="path to agent.yaml")
    p_status.add_argument("--json", action="store_true", help="the raw status document")
    p_probe = sub.add_parser("probe", help="poll one device once: raw registers and values")
    p_probe.add_argument("-c", "--config", required=True, help="path to agent.yaml")
    p_probe.add_argument("device", help="device name from the config")
    p_probe.add_argument("--plan", action="store_true", help="print the planned reads only")
    p_probe.add_argument("--orders", action="store_true",
                         help="show 32/64-bit values in all four byte orders")
    p_scan = sub.add_parser("scan", help="list the Modbus unit ids that answer on a serial port")
    p_scan.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyUSB0")
    p_scan.add_argument("--baudrate", type=int, default=9600)
    p_scan.add_argument("--parity", choices=["N", "E", "O"], default="N")
    p_scan.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    p_scan.add_argument("--bytesize", type=int, choices=[7, 8], default=8)
    p_scan.add_argument("--units", default="1-247", help="e.g. 1-247 or 1-10,20")
    p_scan.add_argument("--timeout", type=float, default=0.2, help="seconds per unit")
    p_scan.add_argument("--ascii", action="store_true", help="Modbus ASCII instead of RTU")
    p_queue = sub.add_parser("queue", help="what is queued; export it (e.g. onto a USB stick)")
    p_queue.add_argument("action", nargs="?", choices=["status", "export"], default="status")
    p_queue.add_argument("-c", "--config", required=True, help="path to agent.yaml")
    p_queue.add_argument("--since", help="export: readings from 2h ago, 2026-11-25, ...")
    p_queue.add_argument("--device", help="export: only this device")
    p_queue.add_argument("--delete", action="store_true",
                         help="export: delete the exported readings from the queue")
    p_demo = sub.add_parser("demo", help="simulated PLC + local broker + agent, live output")
    p_demo.add_argument("--duration", type=float, default=None,
                        help="stop after this many seconds (default: until Ctrl-C)")
    args = parser.parse_args(argv)

    if args.command == "run":
        # Catch SIGTERM/SIGINT from the first moment: importing the runtime takes a while, and a
        # stop requested meanwhile must still end in a clean exit 0, not a signal death.
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload before the config is read: moot
        from agent.service.runtime import run

        return run(args.config, stop)
    if args.command == "check":
        return _check(args.config)
    if args.command == "status":
        from agent.cli.status import status

        return status(args.config, as_json=args.json)
    if args.command == "probe":
        from agent.cli.probe import probe

        return probe(args.config, args.device, plan=args.plan, orders=args.orders)
    if args.command == "scan":
        from agent.cli.probe import parse_units, scan

        try:
            units = parse_units(args.units)
        except ValueError as exc:
            parser.error(str(exc))
        return scan(args.port, args.baudrate, units, parity=args.parity, stopbits=args.stopbits,
                    bytesize=args.bytesize, timeout=args.timeout,
                    framing="ascii" if args.ascii else "rtu")
    if args.command == "queue":
        from agent.cli import queue as queue_cmd

        if args.action == "export":
            return queue_cmd.export(args.config, args.since, args.device, args.delete)
        return queue_cmd.status(args.config)
    try:
        from agent.sim.demo import run_demo
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] != "pymodbus":
            raise
        print("edge-agent demo: its simulated PLC needs pymodbus, which is not installed; "
              f"install the demo extra: pip install '{DEMO_EXTRA}'", file=sys.stderr)
        return 1
    return run_demo(args.duration)


if __name__ == "__main__":
    sys.exit(main())
