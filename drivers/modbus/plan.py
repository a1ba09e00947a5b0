"""Pure read planning: which Modbus requests read a device's points in the fewest round trips.

This module owns `plan` (points -> requests: points of the same table whose addresses are at
most `max_gap` apart are merged into one read, bounded by the per-request limit of the table),
and `split` (a request the device refused with "illegal data address" -> two smaller requests
that still cover its points, cut at the widest gap between them, where a hole in the register
map most likely is). Greedy merging in address order gives the fewest requests for these
bounds. No I/O and no Modbus types beyond table names: a point is a `Span` of addresses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

BIT_TABLES = ("coil", "discrete")
MAX_REGISTERS = 125
MAX_BITS = 2000
BITS_PER_REGISTER = 16
"""On bit tables `max_gap` counts registers' worth of bits: a gap of 1 is 16 bits."""


@dataclass(frozen=True, slots=True)
class Span:
    """The addresses one point occupies: `count` registers (or bits) from `address`."""

    table: str
    address: int
    count: int

    @property
    def end(self) -> int:
        return self.address + self.count  # exclusive


@dataclass(frozen=True, slots=True)
class Request:
    """One read: `count` registers or bits of `table` from `address`, and the points it serves
    (indices into the span list the plan was made from)."""

    table: str
    address: int
    count: int
    points: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.table} {self.address}..{self.address + self.count - 1} ({self.count})"


def limits(table: str, max_registers: int, max_bits: int, max_gap: int) -> tuple[int, int]:
    """(largest request, largest gap) for a table, in its own units."""
    if table in BIT_TABLES:
        return max_bits, max_gap * BITS_PER_REGISTER
    return max_registers, max_gap


def _request(spans: Sequence[Span], members: Sequence[int]) -> Request:
    start = min(spans[i].address for i in members)
    end = max(spans[i].end for i in members)
    return Request(spans[members[0]].table, start, end - start, tuple(sorted(members)))


def plan(
    spans: Sequence[Span], max_gap: int = 16, max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
) -> list[Request]:
    """The fewest requests that read every span, in table then address order.

    Two spans share a request when the addresses between them number at most the gap limit
    and the merged request stays within the size limit. A span larger than the size limit
    gets a request of its own (the device decides whether it accepts it).
    """
    out: list[Request] = []
    for table in sorted({s.table for s in spans}):
        size, gap = limits(table, max_registers, max_bits, max_gap)
        order = sorted((i for i, s in enumerate(spans) if s.table == table),
                       key=lambda i: (spans[i].address, spans[i].end))
        members: list[int] = []
        start = end = 0
        for i in order:
            s = spans[i]
            if members and s.address - end <= gap and max(end, s.end) - start <= size:
                members.append(i)
                end = max(end, s.end)
                continue
            if members:
                out.append(_request(spans, members))
            members, start, end = [i], s.address, s.end
        if members:
            out.append(_request(spans, members))
    return out


def split(request: Request, spans: Sequence[Span]) -> tuple[Request, Request] | None:
    """Two requests covering `request`'s points, cut at the widest gap between them (of equal
    gaps, the one nearest the middle, so a bad address among contiguous points is found in
    log2(n) splits); None if its points cannot be separated (they all overlap)."""
    order = sorted(request.points, key=lambda i: (spans[i].address, spans[i].end))
    best, best_key, end = -1, (-1, 0.0), spans[order[0]].end
    for k in range(1, len(order)):
        s = spans[order[k]]
        key = (s.address - end, -abs(k - len(order) / 2))  # widest gap; ties: nearest middle
        if s.address >= end and key > best_key:  # only cut between disjoint runs
            best, best_key = k, key
        end = max(end, s.end)
    if best < 0:
        return None
    return _request(spans, order[:best]), _request(spans, order[best:])
