"""What every driver is: its config base model and the `Driver` protocol.

A driver turns bytes from one device into `Reading`s and nothing else. It is built with the
ports of the configured buses (`agent.transport.ports`: the core owns every line), opened once,
polled at the device's interval by the core (which owns retries, backoff, logging, the queue
and offline/online reporting), and closed on shutdown or reload. A driver raises `DriverError`
subclasses for failures of the whole poll, and returns readings with a non-"good" quality for
failures of single points.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, Self

from pydantic import Field, model_validator

from agent.core.configbase import NAME_PATTERN, Strict
from agent.core.model import Reading
from agent.core.units import Duration

if TYPE_CHECKING:
    from agent.transport.ports import Port

class DeviceConfig(Strict):
    """Keys every device has, whatever its driver."""

    name: str = Field(pattern=NAME_PATTERN, max_length=64, description="unique device name")
    driver: str
    interval: Duration = Field(default=5.0, ge=0.01, description="time between polls")
    timeout: Duration = Field(default=1.0, gt=0, description="how long to wait for an answer")
    align: bool = Field(
        default=False, description="poll at wall-clock multiples of interval in the gateway's "
        "local time (1d: at midnight; 5m: at :00, :05, ...) instead of every interval from start")
    enabled: bool = True
    profile: str | None = Field(
        default=None, description="sensor profile: keys and points from profiles/NAME.yaml, "
        "merged at load (the device's own keys win)")


DEFAULT_MAX_SILENCE = 900.0
"""A filtered point (deadband/on_change) is still reported at least this often (seconds)."""


class PointConfig(Strict):
    """Keys every point has, whatever its driver; the core applies the reporting ones.

    `values` maps integer codes to words (pump state 0/1/2 -> stopped/running/fault);
    `deadband` (absolute, in engineering units) or `on_change` suppress readings that did not
    move since the last one reported, but never for longer than `max_silence`.
    """

    name: str = Field(pattern=NAME_PATTERN, max_length=64, description="metric name")
    unit: str | None = Field(default=None, description="engineering unit sent with readings")
    values: dict[int, str] | None = Field(
        default=None, min_length=1, description="value map for enumerations: code -> word")
    deadband: float | None = Field(
        default=None, ge=0, description="report only when the value moved at least this much")
    on_change: bool = Field(default=False, description="report only when the value changed")
    max_silence: Duration | None = Field(
        default=None, gt=0, description="longest time a filtered point stays unreported")

    @model_validator(mode="after")
    def _filter_keys(self) -> Self:
        if self.max_silence is not None and self.deadband is None and not self.on_change:
            raise ValueError("max_silence needs deadband or on_change (unfiltered points are "
                             "reported at every poll)")
        if self.deadband is not None and self.values is not None:
            raise ValueError("deadband is for numbers; a point with a value map uses on_change")
        return self


class Driver(Protocol):
    """One device's driver instance. Not thread-safe: the core never calls it concurrently."""

    @property
    def config(self) -> DeviceConfig:
        """The validated device config the driver was built from."""

    @property
    def bus(self) -> str | None:
        """The shared bus it polls through (the scheduler serializes its users), or None."""

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

    def __call__(self, config: Any, ports: Mapping[str, Port]) -> Driver: ...
