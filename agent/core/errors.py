"""The agent's error tree.

Every error the agent raises on purpose is an `AgentError`. `ConfigError` is fatal at start
(the agent refuses to run half-configured); the others are handled where they happen: a
`DriverError` by the device runner (log once, back off, keep the other devices going), a
`PublishError` by the forwarder (readings stay queued), a `QueueError` by whoever touched the
queue.
"""

from __future__ import annotations

from dataclasses import dataclass


class AgentError(Exception):
    """Base of every error the agent raises deliberately."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in a config file, located as file:line:col (1-based)."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class ConfigError(AgentError):
    """The configuration is invalid; carries every issue found, not just the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(i) for i in issues))


class DriverError(AgentError):
    """A device could not be polled. `quality` is the word readings get for this failure."""

    quality = "device_error"
    transient = True


class DeviceTimeout(DriverError):
    """The device did not answer in time (dead unit, unplugged cable, wrong address)."""

    quality = "timeout"


class DeviceUnreachable(DriverError):
    """The transport to the device could not be opened (connection refused, port missing)."""

    quality = "unreachable"


class PublishError(AgentError):
    """The uplink refused or could not carry a message; the readings stay queued."""


class QueueError(AgentError):
    """The queue database could not be opened or written."""
