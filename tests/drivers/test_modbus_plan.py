"""Property and golden tests for drivers.modbus_plan: coverage, limits, fewest requests, splits."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.plan import BIT_TABLES, Request, Span, limits, plan, split

TABLES = ["coil", "discrete", "holding", "input"]


@st.composite
def spans(draw: st.DrawFn) -> list[Span]:
    out = []
    for _ in range(draw(st.integers(1, 40))):
        table = draw(st.sampled_from(TABLES))
        width = 1 if table in BIT_TABLES else draw(st.sampled_from([1, 1, 2, 4, 8]))
        out.append(Span(table, draw(st.integers(0, 600)), width))
    return out


def covers(requests: list[Request], points: list[Span]) -> None:
    served = sorted(i for r in requests for i in r.points)
    assert served == list(range(len(points))), "every point in exactly one request"
    for r in requests:
        for i in r.points:
            s = points[i]
            assert s.table == r.table
            assert r.address <= s.address and s.end <= r.address + r.count


@settings(max_examples=60)
@given(spans(), st.integers(0, 30), st.integers(2, 125), st.integers(16, 2000))
def test_plan_covers_every_point_within_limits(
    points: list[Span], max_gap: int, max_registers: int, max_bits: int
) -> None:
    requests = plan(points, max_gap, max_registers, max_bits)
    covers(requests, points)
    for r in requests:
        size, gap = limits(r.table, max_registers, max_bits, max_gap)
        assert r.count <= size or len(r.points) == 1
        # no stretch of unread addresses wider than the gap limit inside a request
        ranges = sorted((points[i].address, points[i].end) for i in r.points)
        end = ranges[0][1]
        for start, stop in ranges[1:]:
            assert start - end <= gap
            end = max(end, stop)


@settings(max_examples=60)
@given(spans(), st.integers(0, 30))
def test_no_two_requests_could_have_been_one(points: list[Span], max_gap: int) -> None:
    requests = plan(points, max_gap)
    for a, b in itertools.pairwise(requests):
        if a.table == b.table:
            size, gap = limits(a.table, 125, 2000, max_gap)
            merged = b.address + b.count - a.address
            assert b.address - (a.address + a.count) > gap or merged > size


@settings(max_examples=60)
@given(spans(), st.integers(0, 30))
def test_split_keeps_every_point_and_shrinks(points: list[Span], max_gap: int) -> None:
    for r in plan(points, max_gap):
        halves = split(r, points)
        if halves is None:  # only when the points cannot be told apart by address
            ranges = sorted((points[i].address, points[i].end) for i in r.points)
            assert all(b[0] < max(a[1] for a in ranges[:k + 1])
                       for k, b in enumerate(ranges[1:]))
            continue
        assert sorted(halves[0].points + halves[1].points) == sorted(r.points)
        assert all(h.count < r.count or len(h.points) < len(r.points) for h in halves)
        assert halves[0].address + halves[0].count <= halves[1].address


def test_sixty_points_over_three_hundred_registers_cost_a_handful() -> None:
    rng = random.Random(4)
    addresses = sorted(rng.sample(range(0, 299, 2), 60))
    points = [Span("holding", a, 2) for a in addresses]
    requests = plan(points, max_gap=16)
    assert len(requests) <= 4  # 300 registers / 125 per read, rounded up
    assert len(plan(points, max_gap=0, max_registers=1)) == 60  # what one read per value costs


def test_split_cuts_at_the_widest_gap() -> None:
    points = [Span("input", 0, 2), Span("input", 2, 2), Span("input", 30, 2), Span("input", 33, 1)]
    (request,) = plan(points, max_gap=40)
    first, second = split(request, points)  # type: ignore[misc]
    assert (first.address, first.count, first.points) == (0, 4, (0, 1))
    assert (second.address, second.count, second.points) == (30, 4, (2, 3))
    assert split(Request("input", 0, 2, (0,)), points) is None
