"""The `mqtt:` section of the config: broker, topics, QoS, batching, TLS and credentials.

Secrets never live in the model: it holds where the password comes from (`password_file`, refused
when its group or others may read it, or `password_env`), and `password()` reads it when connecting.
Paths are resolved against the config file's directory, like the queue path.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Literal, Self

from pydantic import Field, ValidationInfo, field_validator, model_validator

from agent.core.configbase import Strict
from agent.core.errors import PublishError
from agent.core.units import ByteSize, Duration

TOPIC_PREFIX_PATTERN = r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$"


CREDENTIAL = "credential:"
"""`password_file: credential:NAME` (and the other secret files): the systemd credential NAME,
which the unit passes with `LoadCredential=NAME:/etc/edge-agent/secrets/NAME`."""
SYSTEMD_CREDENTIALS = "/run/credentials/edge-agent.service"
"""Where systemd puts the service's credentials; `$CREDENTIALS_DIRECTORY` inside the service."""
_CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def resolve(value: str, info: ValidationInfo) -> str:
    """A path relative to the config file's directory (or the working directory); for
    `credential:NAME`, the file systemd passed as credential NAME."""
    if value.startswith(CREDENTIAL):
        return credential_path(value[len(CREDENTIAL):])
    base = (info.context or {}).get("base_dir") or os.getcwd()
    return os.path.normpath(os.path.join(base, os.path.expanduser(value)))


def credential_path(name: str) -> str:
    """The file of systemd credential `name`. Inside the service `$CREDENTIALS_DIRECTORY` says
    where; a technician's `check` beside a running service finds it under /run/credentials."""
    if not _CREDENTIAL_NAME.match(name) or name in (".", ".."):
        raise ValueError(f"credential:{name}: a credential name is letters, digits and _ . - "
                         "(the NAME of LoadCredential=NAME:PATH in the unit)")
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    path = os.path.join(folder or SYSTEMD_CREDENTIALS, name)
    if folder and not os.path.isfile(path):
        raise ValueError(f"credential:{name}: systemd passed no credential {name!r}: add "
                         f"LoadCredential={name}:/etc/edge-agent/secrets/{name} to the unit "
                         "(systemctl edit edge-agent)")
    return path


def _in_credentials(path: str) -> bool:
    folders = [SYSTEMD_CREDENTIALS, os.environ.get("CREDENTIALS_DIRECTORY") or SYSTEMD_CREDENTIALS]
    return any(os.path.dirname(path) == os.path.normpath(f) for f in folders)


def private_file(path: str, what: str) -> str:
    """`path` must be a readable file that other users cannot read (a secret). A systemd
    credential is private by construction (systemd gives it to the service's user only) and
    may be missing while the service does not run: `check` then cannot look at it."""
    if _in_credentials(path):
        if os.path.exists(path) and not os.path.isfile(path):
            raise ValueError(f"{what} {path} is not a regular file")
        return path
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ValueError(f"{what} {path}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{what} {path} is not a regular file")
    if st.st_mode & (stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH):
        raise ValueError(f"{what} {path} is readable by other users (its group or everyone: "
                         f"mode {stat.S_IMODE(st.st_mode):o}); run: chmod 600 {path} (owned by "
                         "the agent's user), or hand it over as a systemd credential")
    return path


class TlsConfig(Strict):
    """TLS to the broker: server verification on unless `insecure: true` (warned at every start)."""

    ca_file: str | None = Field(
        default=None, description="CA bundle that signed the broker's certificate; default: "
        "the system's CAs")
    cert_file: str | None = Field(default=None, description="client certificate (mutual TLS)")
    key_file: str | None = Field(default=None, description="client key (mutual TLS); must not "
                                 "be readable by other users")
    min_version: Literal["1.2", "1.3"] = Field(default="1.2", description="lowest TLS version")
    insecure: bool = Field(default=False, description="skip server certificate and host name "
                           "verification; only for a lab, warned at every start")

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _resolve(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else resolve(value, info)

    @field_validator("key_file")
    @classmethod
    def _private_key(cls, value: str | None) -> str | None:
        return None if value is None else private_file(value, "key_file")

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("mutual TLS needs both cert_file and key_file")
        return self


class MqttConfig(Strict):
    """The MQTT uplink: broker, topics, QoS, batching, reconnect backoff, TLS and credentials."""

    host: str = Field(min_length=1, description="broker host name or IP address")
    port: int = Field(default=1883, ge=1, le=65535, description="broker TCP port (8883 for TLS)")
    topic_prefix: str = Field(
        default="city", pattern=TOPIC_PREFIX_PATTERN,
        description="first topic levels, e.g. city or city/water; no wildcards, no outer '/'",
    )
    protocol: Literal["3.1.1", "5"] = Field(
        default="5", description="MQTT version; under 3.1.1 a broker cannot refuse a publish "
        "(it acknowledges and drops what its ACL denies), so delivery is then verified by an "
        "echo (verify_delivery)")
    verify_delivery: bool = Field(
        default=True, description="MQTT 3.1.1: delete acknowledged readings only once a probe "
        "sent after them came back on {topic_prefix}/{gateway}/echo (the ACL must let the "
        "gateway read it); a broker that acknowledges but drops is then reported, and nothing "
        "it dropped is lost")
    qos: Literal[0, 1] = Field(default=1, description="MQTT QoS for readings (1: at least once)")
    client_id: str | None = Field(
        default=None, max_length=128, description="MQTT client id; default derived from gateway"
    )
    keepalive: Duration = Field(default=30.0, ge=5, le=3600, description="MQTT keepalive")
    batch_size: int = Field(default=100, ge=1, le=10000, description="max readings per message")
    max_payload: ByteSize = Field(default=256_000, ge=1024, le=100_000_000,
                                  description="max bytes per telemetry message")
    linger: Duration = Field(default=0.05, ge=0, le=10, description="how long a part-filled "
                             "batch may wait for more readings when online (latency vs size)")
    max_inflight: int = Field(default=20, ge=1, le=1000, description="messages awaiting PUBACK")
    reconnect_min: Duration = Field(default=1.0, gt=0, description="first reconnect delay")
    reconnect_max: Duration = Field(default=60.0, gt=0, description="longest reconnect delay "
                                    "(each delay gets +-25% random jitter)")
    health_interval: Duration = Field(default=60.0, ge=0, description="seconds between health "
                                      "messages; 0: none")
    encoding: Literal["json", "senml"] = Field(default="json", description="telemetry payload: "
                                               "the agent's JSON, or SenML (RFC 8428)")
    username: str | None = Field(default=None, min_length=1, description="MQTT user name")
    password_file: str | None = Field(default=None, description="file holding the MQTT password "
                                      "(refused when other users can read it), or "
                                      "credential:NAME for a systemd credential")
    password_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                     description="environment variable holding the password")
    tls: TlsConfig | None = Field(default=None, description="TLS settings; TLS is on when set")

    @field_validator("password_file")
    @classmethod
    def _private_password(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else private_file(resolve(value, info), "password_file")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.reconnect_min > self.reconnect_max:
            raise ValueError(f"reconnect_min ({self.reconnect_min:g} s) must not exceed "
                             f"reconnect_max ({self.reconnect_max:g} s)")
        if self.password_file and self.password_env:
            raise ValueError("give the password by password_file or password_env, not both")
        if (self.password_file or self.password_env) and not self.username:
            raise ValueError("a password needs a username")
        return self

    def password(self) -> str | None:
        """The password, read now from its file or variable (never stored in the model)."""
        if self.password_file:
            try:
                with open(self.password_file, encoding="utf-8") as f:
                    return f.read().strip()
            except (OSError, UnicodeDecodeError) as exc:  # never quote the content
                why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
                raise PublishError(f"cannot read the MQTT password from {self.password_file}: "
                                   f"{why}") from None
        if self.password_env:
            return os.environ.get(self.password_env)
        return None
