"""The base of every config model, shared by the config sections, the buses and the drivers.

This module owns `Strict` (frozen, unknown keys are errors) and `NAME_PATTERN` (device, bus and
metric names become MQTT topic levels). It lives in the core so that the config package, the
transport and every driver build their models on one base without importing each other.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
"""Device and metric names: they become MQTT topic levels, so no '/', '+', '#' or spaces."""


class Strict(BaseModel):
    """Base of every config model: frozen, unknown keys are errors (typos must not pass)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
