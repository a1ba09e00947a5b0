"""Text sensors' patterns run on an engine that cannot backtrack for ever (issue: one 44-byte
line froze the whole agent). Each test here hangs the process on CPython's `re`."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.config.load import load_config
from agent.core.errors import ConfigError
from drivers.serial_line.parse import FieldSpec, LineParser
from drivers.serial_line.pattern import ENGINE, PatternError, compile_pattern, risky

EVIL = r"^T=(?P<t>(\d+\.?)+)C$"
LINE = "T=" + "1" * 40 + "X"  # 44 bytes: 2^40 ways to split the digits for re


def test_this_gateway_runs_patterns_on_re2() -> None:
    assert ENGINE == "re2", "x86-64 and arm64 have google-re2 (pyproject): install the project"


def test_a_catastrophic_pattern_on_a_bad_line_returns_at_once() -> None:
    parser = LineParser("regex", [FieldSpec("t", "t")], pattern=EVIL)
    assert parser.parse(LINE.encode()).kind == "no_match"
    assert parser.parse(("T=" + "1" * 100_000 + "X").encode()).kind == "no_match"
    good = parser.parse(b"T=12.5C")
    assert good.kind == "good" and good.fields[0].value == 12.5


def test_without_re2_such_patterns_are_refused_with_the_reason() -> None:
    with pytest.raises(PatternError, match="exponential time on a bad line \\(a variable "
                       "repetition inside a repetition\\)"):
        compile_pattern(EVIL, engine="re")
    assert compile_pattern(r"T=(?P<t>[0-9.]+)C", engine="re").search("T=1.5C") is not None
    for safe in (r"^\$WIMTA,(?P<t>-?[\d.]+),C|^\$WIMWV,(?P<d>[\d.]+)", r"([A-Z]{2},)+",
                 r"(?:,|;)+x", r"x{1,3}y*"):
        assert risky(safe) is None, safe
    for bad, why in ((r"(a|aa)*", "alternation"), (r"(.*,){5}", "variable repetition"),
                     (r"(?P<x>a)(?P=x)", "backreference"), (r"(?=a)a", "lookaround")):
        assert why in (risky(bad) or ""), bad


@given(st.text(alphabet="1.CXT=", max_size=60))
def test_re2_and_re_agree_where_re_is_safe(line: str) -> None:
    pattern = r"T=(?P<t>[0-9.]+)C"
    a, b = compile_pattern(pattern).search(line), compile_pattern(pattern, engine="re").search(line)
    assert (a and a.groupdict()) == (b and b.groupdict())


def test_check_names_a_pattern_re2_does_not_accept(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("gateway: {id: gw}\nmqtt: {host: b}\nqueue: {path: q.db}\n"
                   "buses: [{name: line, port: /dev/ttyUSB0}]\n"
                   "devices:\n  - {name: a, driver: serial_line, bus: line, mode: poll, "
                   "command: 'R\\r', format: regex,\n     pattern: '(?P<t>a)(?P=t)', "
                   "points: [{name: t, group: t}]}\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg)
    [found] = info.value.issues
    assert (found.line, found.col) == (7, 15)
    assert found.message.startswith("devices[0].pattern: not accepted by the linear-time "
                                    "engine (RE2):"), found.message
