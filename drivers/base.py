"""What every driver is: its config base model and the `Driver` protocol.

A driver turns bytes from one device into `Reading`s and nothing else. It is opened once,
polled at the device's interval by the core (which owns retries, backoff, logging, the queue
and offline/online reporting), and closed on shutdown or reload. A driver raises `DriverError`
subclasses for failures of the whole poll, and returns readings with a non-"good" quality for
failures of single points.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agent.model import Reading
from agent.units import Duration

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
"""Device and metric names: they become MQTT topic levels, so no '/', '+', '#' or spaces."""


class Strict(BaseModel):
    """Base of every config model: frozen, unknown keys are errors (typos must not pass)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceConfig(Strict):
    """Keys every device has, whatever its driver."""

    name: str = Field(pattern=NAME_PATTERN, max_length=64, description="unique device name")
    driver: str
    interval: Duration = Field(default=5.0, ge=0.01, description="time between polls")
    timeout: Duration = Field(default=1.0, gt=0, description="how long to wait for an answer")
    enabled: bool = True


class Driver(Protocol):
    """One device's driver instance. Not thread-safe: the core never calls it concurrently."""

    @property
    def config(self) -> DeviceConfig:
        """The validated device config the driver was built from."""

    def metrics(self) -> list[tuple[str, str | None]]:
        """(metric, unit) of every reading a poll yields; failed polls report these as missing."""

    def open(self) -> None:
        """Open the transport. May raise DriverError; the core retries with backoff."""

    def poll(self) -> list[Reading]:
        """Read every configured point once. Raises DriverError if the device did not answer."""

    def close(self) -> None:
        """Release the transport. Never raises."""


class DriverClass(Protocol):
    """A driver class: carries its config model and is built from a validated instance of it."""

    @property
    def config_model(self) -> type[DeviceConfig]: ...

    def __call__(self, config: Any) -> Driver: ...
