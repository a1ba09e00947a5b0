"""`python -m tests.chaos --profile short|long [--seed N] [--minutes M] [--faults N]
[--kinds a,b]`: run the
chaos harness, print each fault and the ledger, write ledger.json; exit 1 unless every reading
is accounted for."""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import signal
import sys
import tempfile
from pathlib import Path

from tests.chaos import PROFILES, run
from tests.chaos.faults import KINDS
from tests.chaos.ledger import markdown


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="short")
    ap.add_argument("--seed", type=int, default=None, help="replay a run (printed at start)")
    ap.add_argument("--minutes", type=float, default=None, help="override the profile's length")
    ap.add_argument("--faults", type=int, default=None, help="override the fault count")
    ap.add_argument("--kinds", default=None,
                    help=f"comma-separated fault kinds (default all: {','.join(KINDS)})")
    ap.add_argument("--workdir", type=Path, default=None, help="keep logs here (default: temp)")
    args = ap.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGTERM):  # even when started in the background
        signal.signal(sig, signal.default_int_handler)  # KeyboardInterrupt: the world is stopped
    profile = PROFILES[args.profile]
    if args.minutes is not None:
        profile = dataclasses.replace(profile, minutes=args.minutes)
    if args.faults is not None:
        profile = dataclasses.replace(profile, faults=args.faults)
    if args.kinds:
        kinds = tuple(args.kinds.split(","))
        if unknown := set(kinds) - set(KINDS):
            ap.error(f"unknown fault kinds {sorted(unknown)}")
        profile = dataclasses.replace(profile, kinds=kinds)
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="chaos-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"work directory {workdir} (agent.log, broker/, ledger.json, ledger.md)", flush=True)
    ledger = run(profile, seed, workdir, log=lambda s: print(s, flush=True))
    (workdir / "ledger.json").write_text(ledger.to_json())
    (workdir / "ledger.md").write_text(markdown(json.loads(ledger.to_json())) + "\n")
    print(ledger.summary(), flush=True)
    return 0 if ledger.ok else 1


if __name__ == "__main__":
    sys.exit(main())
