"""The `status_page:` section of the config: the technician's local page and /metrics.

Off by default; on, it listens on 127.0.0.1:8088. Any other `bind` address (the service port's,
or 0.0.0.0) needs `token_file`, a file only the agent's user may read (checked like the MQTT
password file) holding a token of at least 16 characters; the model keeps the file's path, never
the token. `agent.service.status_page` serves the page.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from agent.config.mqtt import private_file, resolve
from agent.core.configbase import Strict

MIN_TOKEN = 16


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


class StatusPageConfig(Strict):
    """The local status page and metrics endpoint for technicians (off by default)."""

    enabled: bool = Field(default=False, description="serve the status page, /status.json "
                          "and /metrics")
    bind: str = Field(default="127.0.0.1", description="IP address to listen on; anything but "
                      "loopback (e.g. the service port's address, or 0.0.0.0) needs token_file")
    port: int = Field(default=8088, ge=1, le=65535, description="TCP port")
    token_file: str | None = Field(
        default=None, description="file holding the access token (at least 16 characters; "
        "refused when other users can read it), or credential:NAME for a systemd credential; "
        "once set, every data request needs it")

    @field_validator("bind")
    @classmethod
    def _ip(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address (e.g. 127.0.0.1, 0.0.0.0, "
                             "192.168.250.1)") from None

    @field_validator("token_file")
    @classmethod
    def _private(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        path = private_file(resolve(value, info), "token_file")
        if not os.path.exists(path) and "CREDENTIALS_DIRECTORY" not in os.environ:
            return path  # a credential of a service that is not running: read at its start
        try:
            token = read_token(path)
        except OSError as exc:
            raise ValueError(f"token_file {path}: {exc.strerror}") from None
        except UnicodeDecodeError:  # its message would quote a byte of the secret
            raise ValueError(f"token_file {path} is not UTF-8 text") from None
        if len(token) < MIN_TOKEN:  # never echo the content
            raise ValueError(f"token_file {path}: the token must be at least {MIN_TOKEN} "
                             "characters, e.g.: (umask 077; head -c 24 /dev/urandom | base64 "
                             f"> {path})")
        return path

    @model_validator(mode="after")
    def _token_off_loopback(self) -> Self:
        if self.enabled and self.token_file is None and not is_loopback(self.bind):
            raise ValueError(f"bind {self.bind} is reachable from other machines: set "
                             "token_file, or bind 127.0.0.1")
        return self


def read_token(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read().strip()
