"""The ledger: every reading accounted for, by the queue's seq and by each device's own counter.

By seq (what the queue committed): each seq 1..last was delivered, is still queued, or was
evicted (counted by the queue); anything else is lost. Duplicates (a seq received twice) are
counted and must carry the same reading. By counter (what each device answered): each value
the simulator served was delivered as a good reading, or its reply was damaged (re-read), or it
was in flight at a `kill -9` (answered within a second before the kill, never committed), or
its poll failed anyway (answered after the agent gave up); any other is unexplained. Within a
device, a later seq must never carry an older counter (out of order).
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.faults import Fault
from tests.chaos.world import World

IN_FLIGHT = 1.0  # s before a kill in which an answered poll may die uncommitted


@dataclass
class DeviceLedger:
    answered: int = 0
    delivered: int = 0
    damaged: int = 0
    in_flight_at_kill: int = 0
    failed_poll: int = 0
    evicted_disk_full: int = 0  # committed, then evicted while the disk was full
    unexplained: list[int] = field(default_factory=list)
    unexpected: list[int] = field(default_factory=list)  # delivered but never answered
    committed_twice: list[int] = field(default_factory=list)
    out_of_order: int = 0


@dataclass
class Ledger:
    seed: int
    profile: str
    seconds: float
    faults: dict[str, int]
    recovery_max_s: dict[str, float]
    not_recovered: list[str]
    produced: int  # seqs committed: 1..last
    delivered: int
    still_queued: int
    evicted: int
    dropped: int
    duplicates: int
    conflicting_duplicates: list[int]
    lost: list[int]
    devices: dict[str, DeviceLedger]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.conflicting_duplicates or self.not_recovered
                    or self.dropped
                    or any(d.unexplained or d.unexpected or d.committed_twice or d.out_of_order
                           for d in self.devices.values()))

    def to_json(self) -> str:
        return json.dumps(asdict(self) | {"ok": self.ok}, indent=1)

    def summary(self) -> str:
        lines = [f"chaos ledger: profile {self.profile}, seed {self.seed}, "
                 f"{self.seconds / 60:.1f} min, {sum(self.faults.values())} faults",
                 "  fault            count  max recovery"]
        for kind, n in sorted(self.faults.items()):
            worst = self.recovery_max_s.get(kind, float("nan"))
            lines.append(f"  {kind:16s} {n:5d}  {worst:6.2f} s")
        lines += [f"  readings (by seq): produced {self.produced}, delivered {self.delivered}, "
                  f"still queued {self.still_queued}, evicted {self.evicted}, "
                  f"dropped {self.dropped}, duplicates {self.duplicates} "
                  f"(conflicting {len(self.conflicting_duplicates)}), lost {len(self.lost)}"]
        for name, d in self.devices.items():
            lines.append(
                f"  {name:5s} polls answered {d.answered}, delivered {d.delivered}, damaged "
                f"{d.damaged}, in-flight at kill {d.in_flight_at_kill}, failed {d.failed_poll},"
                f" evicted {d.evicted_disk_full},"
                f" unexplained {len(d.unexplained)} {d.unexplained[:5]}, unexpected "
                f"{len(d.unexpected)}, committed twice {len(d.committed_twice)}, "
                f"out of order {d.out_of_order}")
        if self.not_recovered:
            lines.append(f"  not recovered: {self.not_recovered}")
        lines.append("  RESULT: " + ("every reading accounted for" if self.ok else "FAILED"))
        return "\n".join(lines)


def markdown(led: dict[str, Any]) -> str:
    """A ledger.json as the README's table: faults by kind with max recovery, then totals."""
    rows = ["| fault | count | max recovery |", "| --- | ---: | ---: |"]
    rows += [f"| `{k}` | {n} | {led['recovery_max_s'].get(k, float('nan')):.2f} s |"
             for k, n in sorted(led["faults"].items())]
    dev = led["devices"]
    polls = {k: sum(d[k] for d in dev.values()) for k in (
        "answered", "delivered", "damaged", "in_flight_at_kill", "failed_poll",
        "evicted_disk_full")}
    unexplained = sum(len(d["unexplained"]) for d in dev.values())
    return "\n".join([
        *rows, "",
        f"Readings by seq: {led['produced']} produced, {led['delivered']} delivered, "
        f"{led['still_queued']} still queued at the end, {led['evicted']} evicted (counted by "
        f"the queue; only `disk_full` makes it evict here), {led['dropped']} dropped, "
        f"{led['duplicates']} "
        f"duplicates (same seq, same reading; {len(led['conflicting_duplicates'])} differing), "
        f"**{len(led['lost'])} lost**.",
        f"Polls by device counter: {polls['answered']} answered, {polls['delivered']} delivered "
        f"as good readings, {polls['damaged']} damaged replies (read again), "
        f"{polls['in_flight_at_kill']} in flight at a `kill -9`, {polls['failed_poll']} failed "
        f"polls, {polls['evicted_disk_full']} evicted while the disk was full, "
        f"{unexplained} unexplained; out of order within a device: "
        f"{sum(d['out_of_order'] for d in dev.values())}.",
    ])


def queued_readings(db: Path) -> dict[int, dict[str, Any]]:
    """The readings still in the queue, by seq, shaped like received ones."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute("SELECT seq, device, metric, value, quality, ts FROM readings")
        out = {}
        for seq, device, metric, value, quality, ts in rows:
            if isinstance(value, str):
                value = json.loads(value)
            out[seq] = {"seq": seq, "device": device, "metric": metric, "value": value,
                        "quality": quality, "ts": ts}
        return out
    finally:
        con.close()


def queue_state(db: Path) -> tuple[int, set[int], int, int]:
    """(last seq committed, seqs still queued, evicted, dropped), read-only."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
        queued = {s for (s,) in con.execute("SELECT seq FROM readings")}
    finally:
        con.close()
    return int(meta["next_seq"]) - 1, queued, int(meta["evicted"]), int(meta["dropped"])


def _device(world: World, name: str, readings: dict[int, dict[str, Any]],
            kills: list[float], full: list[tuple[float, float]]) -> DeviceLedger:
    served = world.served[name]
    d = DeviceLedger(answered=len(served.times))
    by_value: dict[int, list[int]] = defaultdict(list)
    failed_ts: list[float] = []
    for seq, r in sorted(readings.items()):
        if r["device"] != name or r["metric"] != "n":
            continue
        if r["quality"] == "good":
            by_value[int(r["value"])].append(seq)
        else:
            failed_ts.append(r["ts"] / 1000)
    d.delivered = len(by_value)
    d.committed_twice = sorted(v for v, seqs in by_value.items() if len(seqs) > 1)
    d.unexpected = sorted(set(by_value) - set(served.times))
    ordered = [v for _, v in sorted((seqs[0], v) for v, seqs in by_value.items())]
    d.out_of_order = sum(1 for a, b in itertools.pairwise(ordered) if b < a)
    for value, at in served.times.items():
        if value in by_value:
            continue
        if value in served.damaged:
            d.damaged += 1
        elif any(k - IN_FLIGHT <= at <= k for k in kills):
            d.in_flight_at_kill += 1
        elif any(-2.0 <= served.walls[value] - ts <= 0.05 for ts in failed_ts):
            d.failed_poll += 1
        elif any(a - IN_FLIGHT <= at <= b for a, b in full):
            d.evicted_disk_full += 1
        else:
            d.unexplained.append(value)
    return d


def account(world: World, faults: list[Fault], seed: int, profile: str,
            seconds: float) -> Ledger:
    """The ledger, once the agent has stopped and the subscriber has what it will get."""
    last, queued, evicted, dropped = queue_state(world.queue_db)
    received = world.collector.readings()
    readings: dict[int, dict[str, Any]] = {}
    conflicting: set[int] = set()
    for r in received:
        r = {k: v for k, v in r.items() if k != "historical"}
        if readings.setdefault(int(r["seq"]), r) != r:
            conflicting.add(int(r["seq"]))
    missing = set(range(1, last + 1)) - set(readings) - queued
    lost = sorted(missing)[evicted:] if len(missing) > evicted else []
    full = [(f.started, f.ended) for f in faults if f.kind == "disk_full"]
    recovery: dict[str, float] = {}
    for f in faults:
        if f.recovery is not None:
            recovery[f.kind] = round(max(recovery.get(f.kind, 0.0), f.recovery), 2)
    return Ledger(
        seed=seed, profile=profile, seconds=round(seconds, 1),
        faults=dict(Counter(f.kind for f in faults)), recovery_max_s=recovery,
        not_recovered=[f"{f.kind}@{i + 1}" for i, f in enumerate(faults) if f.recovered is None],
        produced=last, delivered=len(set(readings) & set(range(1, last + 1))),
        still_queued=len(queued), evicted=evicted, dropped=dropped,
        duplicates=len(received) - len(readings), conflicting_duplicates=sorted(conflicting),
        lost=lost,
        devices={name: _device(world, name, queued_readings(world.queue_db) | readings,
                               world.kills, full)
                 for name in world.served},
    )
