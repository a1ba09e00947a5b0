"""The queue's invariants (agent/queue/__init__.py) each name the tests that check them: every
test named there exists, and every invariant names at least one."""

from __future__ import annotations

import ast
import re

import agent.queue
from tests.support import ROOT

POINTER = re.compile(r"(tests/[\w/]+\.py)::(\w+)")


def _tests_in(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    names = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}
    names |= {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign)  # Hypothesis TestCase
              for t in n.targets if isinstance(t, ast.Name)}
    return {n for n in names if n.startswith("test_")}


def test_every_invariant_points_at_tests_that_exist() -> None:
    doc = agent.queue.__doc__ or ""
    invariants = re.split(r"\n(?=\d\. )", doc.split("Invariants", 1)[1])[1:]
    assert len(invariants) == 7
    for text in invariants:
        pointers = POINTER.findall(text)
        assert pointers, f"invariant without a test: {text[:60]}"
        for path, name in pointers:
            assert name in _tests_in(path), f"{path}::{name} (named in agent/queue) is missing"
