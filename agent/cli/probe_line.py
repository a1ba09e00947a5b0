"""`edge-agent probe` for `serial_line` devices: every frame the sensor sent, raw and parsed.

This module owns what probe prints for a text sensor: in poll mode the command sent and each
frame of the reply; in stream mode each frame heard while listening (up to `stale_after`,
at most `LISTEN_MAX`, until the first valid frame), printed as it comes; bytes shown safely
(non-printable as \\xHH), with why a bad frame was refused; then the fields of the last valid
frame: where each was found, its text as sent, and its value. `--plan` prints the framing and
parsing the driver will use, without touching the port. Exit 0 when a valid frame arrived.
"""

from __future__ import annotations

import time
from typing import TextIO

from agent.core.errors import DriverError
from agent.core.model import GOOD, now_ms
from drivers.serial_line.driver import Seen, SerialLine
from drivers.serial_line.parse import safe

LISTEN_MAX = 60.0
"""Longest a probe listens to a streaming sensor for a valid frame (seconds)."""
LOOK_EVERY = 0.05
"""How often a stream probe looks at what the listener heard (pacing, seconds)."""


def plan(driver: SerialLine, out: TextIO) -> None:
    c = driver.config
    start = f"'{safe(driver.framer.start)}' ... " if driver.framer.start else ""
    print(f"{c.name}: {c.mode} on {driver.port.name}; frames {start}"
          f"'{safe(driver.framer.terminator)}', at most {c.max_length} bytes; format {c.format}"
          + (f" '{c.pattern}'" if c.pattern else "")
          + (f"; checksum {c.checksum.type} ({c.checksum.encoding})" if c.checksum else ""),
          file=out)
    if driver.command is not None:
        print(f"  command '{safe(driver.command)}'", file=out)
    for p in c.points:
        kind = "state" if p.state else "total" if p.accumulate else "value"
        print(f"  {p.name:<20} {p.select!s:<12} {p.type:<6} {kind}", file=out)


def probe(driver: SerialLine, out: TextIO) -> int:
    c = driver.config
    driver.trace = []
    started, shown, error = now_ms(), 0, None
    if driver.passive:
        wait = min(c.stale_after or LISTEN_MAX, LISTEN_MAX)
        print(f"{c.name}: listening on {driver.port.name} for up to {wait:g} s", file=out,
              flush=True)
        driver.open()
        deadline = time.monotonic() + wait
        while not _valid(driver.trace) and time.monotonic() < deadline:
            try:
                driver.poll()
                error = None
            except DriverError as exc:
                error = exc
            shown = _print(driver.trace, shown, started, out)
            time.sleep(LOOK_EVERY)  # pace: the listener collects meanwhile
    else:
        assert driver.command is not None
        print(f"{c.name}: sent '{safe(driver.command)}' on {driver.port.name}, waiting up to "
              f"{driver.timeout:g} s", file=out, flush=True)
        try:
            driver.poll()
        except DriverError as exc:
            error = exc
    _print(driver.trace, shown, started, out)
    good = [s for s in driver.trace if s.parsed is not None and s.parsed.good]
    if not good:
        why = f"{error} ({error.quality})" if error else "no valid frame"
        print(f"{c.name}: no valid frame: {why}", file=out)
        return 1
    last = good[-1].parsed
    assert last is not None
    print(f"fields of the last valid frame ({len(good)} valid of {len(driver.trace)}):",
          file=out)
    units = {p.name: p.unit for p in c.points}
    for r in last.fields:
        shown_value = (f"{r.value!r}" if isinstance(r.value, str) else str(r.value)
                       ) if r.quality == GOOD else f"- ({r.quality})"
        unit = f" {units[r.spec.name]}" if units[r.spec.name] and r.quality == GOOD else ""
        text = "-" if r.text is None else f"'{safe(r.text.encode('latin-1'))}'"
        print(f"  {r.spec.name:<20} {r.spec.select!s:<12} {text:<16} {shown_value}{unit}",
              file=out)
    return 0


def _valid(trace: list[Seen]) -> bool:
    return any(s.parsed is not None and s.parsed.good for s in trace)


def _print(trace: list[Seen], shown: int, started: int, out: TextIO) -> int:
    for s in trace[shown:]:
        if s.parsed is None:
            verdict = {"too_long": "too long: dropped up to the terminator",
                       "partial": "cut short", "junk": "bytes outside frames"}[s.event.kind]
            kind = s.event.kind
        else:
            kind = "frame"
            verdict = {"good": "ok", "ignored": "ignored (not selected)"}.get(
                s.parsed.kind, f"{s.parsed.kind}: {s.parsed.detail}")
        print(f"  +{(s.ts - started) / 1000:6.3f} s  {kind:<8} '{safe(s.event.data)}'  "
              f"{verdict}", file=out, flush=True)
    return len(trace)
