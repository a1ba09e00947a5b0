"""Per-point reporting rules the core applies to every driver's readings: value maps and
report-by-exception.

This module owns `ReportFilter`: for each point with a `values` map it turns integer codes
into words (pump state 2 -> "fault"; a code the map does not know keeps its number with
quality "unmapped"), and for each point with `deadband` or `on_change` it drops readings that
did not move since the last one *reported* (so slow drift is still reported once it adds up),
unless `max_silence` has passed or the quality changed. Points without these keys pass
through untouched. Times are the readings' own timestamps, so the rules are deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from agent.core.model import GOOD, Reading, Value
from drivers.base import DEFAULT_MAX_SILENCE, PointConfig


def _code(value: Value) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


class ReportFilter:
    """Applies the points' `values`, `deadband`, `on_change` and `max_silence` to readings."""

    def __init__(self, points: Sequence[PointConfig]) -> None:
        self._rules = {p.name: p for p in points
                       if p.values or p.deadband is not None or p.on_change}
        self._last: dict[str, tuple[Value, str, int]] = {}  # metric -> value, quality, ts
        self.suppressed = 0

    def apply(self, readings: Sequence[Reading]) -> list[Reading]:
        if not self._rules:
            return list(readings)
        out: list[Reading] = []
        for r in readings:
            rule = self._rules.get(r.metric)
            if rule is None:
                out.append(r)
                continue
            if rule.values and r.quality == GOOD:
                word = rule.values.get(code) if (code := _code(r.value)) is not None else None
                r = replace(r, value=word) if word is not None else replace(r, quality="unmapped")
            if (rule.deadband is None and not rule.on_change) or self._report(rule, r):
                out.append(r)
            else:
                self.suppressed += 1
        return out

    def _report(self, rule: PointConfig, r: Reading) -> bool:
        last = self._last.get(r.metric)
        silence = rule.max_silence or DEFAULT_MAX_SILENCE
        if last is not None and last[1] == r.quality and r.ts - last[2] < silence * 1000:
            value, before = r.value, last[0]
            if rule.deadband is not None and _number(value) and _number(before):
                assert isinstance(value, int | float) and isinstance(before, int | float)
                moved = abs(value - before) >= rule.deadband and value != before
            else:
                moved = value != before
            if not moved:
                return False
        self._last[r.metric] = (r.value, r.quality, r.ts)
        return True


def _number(v: Value) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)
