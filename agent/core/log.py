"""Logging: structlog set up once for the process, and the log-once helper for repeating failures.

Readable lines on a terminal, one JSON object per line otherwise (under systemd). Every event
carries `device` and `stage` keys (defaulting to "-" and "agent") so logs can be filtered the
same way whatever emitted them. Library loggers (pymodbus, paho) are quietened:
the core logs what they mean, once.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any, Literal

import structlog
from structlog.typing import EventDict, WrappedLogger

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}


def _ensure_keys(_: WrappedLogger, __: str, event: EventDict) -> EventDict:
    event.setdefault("device", "-")
    event.setdefault("stage", "agent")
    return event


def setup(
    level: str = "info", fmt: Literal["auto", "console", "json"] = "auto", stream: Any = None
) -> None:
    """Configure structlog for the whole process (idempotent)."""
    out = stream if stream is not None else sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _ensure_keys,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    for name in ("pymodbus", "paho"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def get(stage: str, device: str = "-") -> Any:
    """A logger bound to a stage (poll, queue, uplink, ...) and optionally a device."""
    return structlog.get_logger().bind(stage=stage, device=device)


class Episode:
    """A repeating failure: logged once, then summarized every `summary_every` s, then recovered.

    `failed(kind, ...)` at every failure; `recovered(...)` at every success. A new kind of
    failure while one is active is logged as a new episode. The summary says how many failures
    there were (`repeated`) over how long (`for_s`); the recovery how many and how long down.
    """

    def __init__(self, log: Any, event: str, recovered_event: str,
                 summary_every: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._log = log
        self._event = event
        self._recovered_event = recovered_event
        self._summary_every = summary_every
        self.kind: str | None = None
        self.count = 0
        self._since = 0.0
        self._last_summary = 0.0

    @property
    def active(self) -> bool:
        return self.kind is not None

    def failed(self, kind: str, **fields: Any) -> bool:
        """Record a failure; returns True when this call logged (a new episode or a summary)."""
        now = self._clock()
        if self.kind != kind:
            self.kind, self.count, self._since, self._last_summary = kind, 1, now, now
            self._log.warning(self._event, kind=kind, **fields)
            return True
        self.count += 1
        if now - self._last_summary >= self._summary_every:
            self._last_summary = now
            self._log.warning(self._event, kind=kind, repeated=self.count,
                              for_s=round(now - self._since, 1), **fields)
            return True
        return False

    def recovered(self, **fields: Any) -> bool:
        """Record a success; logs the recovery if a failure episode was active."""
        if self.kind is None:
            return False
        self._log.info(self._recovered_event, after_failures=self.count,
                       down_s=round(self._clock() - self._since, 1), **fields)
        self.kind, self.count = None, 0
        return True
