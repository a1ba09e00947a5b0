"""The text sensors' user patterns (`pattern:`, `select:`) on an engine that cannot backtrack.

CPython's `re` backtracks and holds the GIL while it does: one pattern such as
`^T=(?P<t>(\\d+\\.?)+)C$` and one 44-byte line stop every thread of the agent, signal handlers
included. This module owns compiling a technician's pattern: on RE2 (google-re2, linear in the
line's length whatever the pattern) wherever its wheel exists (x86-64, arm64). Where it does not
(armhf: PyPI has no RE2 wheel for 32-bit Arm), patterns run on `re` but only after `risky`
found no repetition that can match the same text in exponentially many ways (a variable-length
repetition inside another, or `|` inside a repetition); lines are bounded by `max_length`.

Both engines accept the same syntax: RE2's (named groups `(?P<name>...)`, classes, anchors,
repetition; no backreferences, no lookarounds), so a config checked on one gateway is valid on
every other. `compile_pattern` raises `PatternError` with words a technician can act on.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import re
from typing import Any, Protocol

ENGINE = "re2" if importlib.util.find_spec("re2") is not None else "re"
"""The engine this gateway runs patterns on (the wheel exists for x86-64 and arm64 only). RE2
itself is loaded with the first pattern: a gateway without text sensors never maps it."""


@functools.cache
def _re2() -> Any:
    return importlib.import_module("re2") if ENGINE == "re2" else None


class PatternError(ValueError):
    """A pattern the engine does not accept; the message says why in a technician's words."""


class Match(Protocol):
    def groupdict(self) -> dict[str, str | None]: ...


class Pattern(Protocol):
    """What the driver uses of a compiled pattern (both engines provide it)."""

    @property
    def groupindex(self) -> Any: ...

    def search(self, text: str) -> Match | None: ...


def compile_pattern(text: str, engine: str = ENGINE) -> Pattern:
    """`text` compiled on `engine` ("re2" or "re"), or PatternError."""
    try:
        checked = re.compile(text)  # its messages say where: "missing ), ... at position 2"
    except re.error as exc:
        raise PatternError(f"not a valid regular expression: {exc}") from None
    re2 = _re2()
    if re2 is not None:
        options = re2.Options()
        options.log_errors = False  # the error is ours to report, not absl's on stderr
        try:
            compiled = re2.compile(text, options)
        except re2.error as exc:
            why = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else exc
            raise PatternError(f"not accepted by the linear-time engine (RE2): {why}; RE2 has "
                               "no backreferences or lookarounds") from None
        if engine == "re2":
            return compiled  # type: ignore[no-any-return]
    elif engine == "re2":
        raise PatternError("RE2 is not installed on this gateway")
    danger = risky(text)
    if danger:
        raise PatternError(f"this pattern can take exponential time on a bad line ({danger}); "
                           "write it without a repetition inside a repetition, e.g. "
                           r"'T=(?P<t>[0-9.]+)C' instead of 'T=(?P<t>(\d+\.?)+)C'")
    return checked


def risky(text: str) -> str | None:
    """Why `re` could backtrack exponentially on this pattern, or None.

    Conservative: a repetition of more than one that contains a variable-length repetition or
    an alternation (`(\\d+\\.?)+`, `(a|aa)*`, `(.*,){5}`) is refused; so are backreferences and
    lookarounds, which RE2 does not have either."""
    parser: Any = importlib.import_module("re._parser")  # sre's parse tree (3.11+)
    return _walk(parser.parse(text), inside=False, parser=parser)


def _walk(items: Any, inside: bool, parser: Any) -> str | None:
    c = parser
    for op, av in items:
        name = str(op)
        if name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, high, body = av
            variable = high != low
            if inside and variable:
                return "a variable repetition inside a repetition"
            repeats = high == c.MAXREPEAT or high > 1
            found = _walk(body, inside or repeats, parser)
            if found:
                return found
        elif name == "SUBPATTERN":
            found = _walk(av[-1], inside, parser)
            if found:
                return found
        elif name == "BRANCH":
            if inside:
                return "an alternation inside a repetition"
            for branch in av[1]:
                found = _walk(branch, inside, parser)
                if found:
                    return found
        elif name in ("GROUPREF", "GROUPREF_EXISTS"):
            return "a backreference"
        elif name in ("ASSERT", "ASSERT_NOT"):
            return "a lookaround"
        elif name == "ATOMIC_GROUP":
            found = _walk(av, inside, parser)
            if found:
                return found
    return None
