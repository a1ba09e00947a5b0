"""Logging: fixed keys on every event, JSON or console lines, and repeating failures logged once,
then summarized, then their recovery."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from agent.core import log


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """Other tests keep the logging they had."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_fixed_keys() -> None:
    out = io.StringIO()
    log.setup("info", "json", stream=out)
    log.get("poll", "intake-plc").warning("device offline", kind="timeout")
    log.get("agent").info("agent started", devices=3)
    log.get("agent").debug("not shown at info")
    structlog.get_logger().info("from a bare logger")
    events = _lines(out)
    assert [e["event"] for e in events] == ["device offline", "agent started", "from a bare logger"]
    for e in events:
        assert {"event", "device", "stage", "level", "timestamp"} <= set(e)
    assert (events[0]["device"], events[0]["stage"], events[0]["kind"]) == (
        "intake-plc", "poll", "timeout")
    assert (events[2]["device"], events[2]["stage"]) == ("-", "agent")
    assert logging.getLogger("pymodbus").level == logging.CRITICAL  # libraries: quiet


def test_console_lines_are_readable() -> None:
    out = io.StringIO()
    log.setup("debug", "console", stream=out)
    log.get("poll", "intake-plc").info("device back online", down_s=12.5)
    line = out.getvalue()
    assert "device back online" in line and "device=intake-plc" in line and "down_s=12.5" in line
    assert not line.startswith("{")


def test_a_repeating_failure_is_logged_once_then_summarized_then_recovered() -> None:
    out = io.StringIO()
    log.setup("info", "json", stream=out)
    now = [100.0]
    ep = log.Episode(log.get("poll", "plc"), "device offline", "device back online",
                     summary_every=300.0, clock=lambda: now[0])
    logged = []
    for _ in range(10):  # every 5 s for 50 s: one line
        logged.append(ep.failed("timeout", error="no reply"))
        now[0] += 5
    now[0] += 300
    logged.append(ep.failed("timeout", error="no reply"))  # the periodic summary
    logged.append(ep.failed("timeout", error="no reply"))
    logged.append(ep.failed("unreachable", error="refused"))  # another cause: new episode
    now[0] += 10
    assert ep.recovered() and not ep.recovered()
    assert logged == [True] + [False] * 9 + [True, False, True]
    first, summary, other, back = _lines(out)
    assert (first["event"], first["kind"], first["level"]) == ("device offline", "timeout",
                                                              "warning")
    assert (summary["repeated"], summary["for_s"]) == (11, 350.0)
    assert (other["kind"], "repeated" in other) == ("unreachable", False)
    assert (back["event"], back["after_failures"], back["down_s"], back["level"]) == (
        "device back online", 1, 10.0, "info")
