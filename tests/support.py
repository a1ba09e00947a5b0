"""Test helpers shared by the suite: polling waits, the schema-validating MQTT collector, and
config builders. Fixtures that start peers live in conftest.py."""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.queue import schema

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "config" / "schemas"
EDGE_AGENT = [str(Path(sys.executable).parent / "edge-agent")]


RunAgent = Callable[..., Any]
"""The `run_agent` fixture: run_agent(broker_port, devices=None, **mqtt_keys) -> Agent."""


def next_seq_in(db: Path) -> int:
    """The queue's next seq, read from its file beside a running agent (1 before it exists)."""
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            row = con.execute(schema.META_VALUE, (schema.NEXT_SEQ,)).fetchone()
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 1
    return int(row[0]) if row else 1


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               what: str = "condition", error: type[Exception] | None = None) -> Any:
    """Poll `predicate` until it returns something truthy; after `timeout` s fail the test, or
    raise `error` (the benchmarks, which run outside pytest)."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            message = f"timed out after {timeout:g} s waiting for {what}"
            if error is not None:
                raise error(message)
            pytest.fail(message)
        time.sleep(interval)


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


TELEMETRY = _validator("telemetry.schema.json")
STATUS = _validator("status.schema.json")
HEALTH = _validator("health.schema.json")
SENML = _validator("telemetry-senml.schema.json")


class Collector:
    """Subscribes to `#` (QoS 1, persistent session) and keeps every message, validated.

    Its session survives a broker restart (the broker fixture is persistent), so messages the
    agent publishes while the collector is still reconnecting are kept for it, not lost.
    """

    def __init__(self, port: int, client_id: str = "test-collector", ca: Path | None = None,
                 cert: Path | None = None, key: Path | None = None,
                 username: str | None = None, password: str | None = None) -> None:
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self.invalid: list[str] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        c.reconnect_delay_set(0.1, 0.5)
        if ca is not None:
            c.tls_set(ca_certs=str(ca), certfile=cert and str(cert), keyfile=key and str(key))
        if username is not None:
            c.username_pw_set(username, password)
        c.on_connect = lambda cl, *_: cl.subscribe("#", qos=1)
        c.on_subscribe = lambda *_: self._subscribed.set()
        c.on_disconnect = lambda *_: self._subscribed.clear()
        c.on_message = self._on_message
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        if not self._subscribed.wait(5):
            raise RuntimeError("collector could not subscribe")

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
            validator = (STATUS if msg.topic.endswith("/status") else
                         HEALTH if msg.topic.endswith("/health") else
                         SENML if isinstance(body, list) else TELEMETRY)
            errors = [e.message for e in validator.iter_errors(body)]
        except ValueError as exc:
            body, errors = {}, [f"not JSON: {exc}"]
        with self._cond:
            if errors:
                self.invalid.append(f"{msg.topic}: {errors}")
            self.messages.append((msg.topic, body, msg.retain))
            self._cond.notify_all()

    def wait_subscribed(self, timeout: float = 10.0) -> None:
        """After a broker restart: block until the subscription is back."""
        if not self._subscribed.wait(timeout):
            raise AssertionError("collector did not resubscribe")

    def telemetry(self) -> list[dict[str, Any]]:
        with self._cond:
            return [b for t, b, _ in self.messages
                    if t.endswith("/telemetry") and isinstance(b, dict)]

    def senml(self) -> list[list[dict[str, Any]]]:
        with self._cond:
            return [b for t, b, _ in self.messages
                    if t.endswith("/telemetry") and isinstance(b, list)]

    def healths(self) -> list[dict[str, Any]]:
        with self._cond:
            return [b for t, b, _ in self.messages if t.endswith("/health")]

    def statuses(self) -> list[dict[str, Any]]:
        with self._cond:
            return [b for t, b, _ in self.messages if t.endswith("/status")]

    def readings(self) -> list[dict[str, Any]]:
        """Every reading received, in arrival order, with its message's device and flag added."""
        return [dict(r, device=m["device"], historical=m["historical"])
                for m in self.telemetry() for r in m["readings"]]

    def seqs(self) -> set[int]:
        return {r["seq"] for r in self.readings()}

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def write_config(path: Path, *, broker_port: int, devices: list[dict[str, Any]],
                 queue: str = "queue.db", **mqtt_extra: Any) -> Path:
    """An agent.yaml for tests (JSON is valid YAML); returns its path."""
    cfg = {
        "gateway": {"id": "test-gw", "site": "lab"},
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "topic_prefix": "city",
                 "reconnect_min": 1, "reconnect_max": 2, **mqtt_extra},
        "queue": {"path": queue},
        "log": {"level": "info", "format": "json"},
        "devices": devices,
    }
    path.write_text(json.dumps(cfg, indent=2))
    return path


def modbus_device(name: str, port: int, unit: int = 1, interval: str = "100ms",
                  points: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "name": name, "driver": "modbus_tcp", "host": "127.0.0.1", "port": port, "unit": unit,
        "interval": interval, "timeout": "500ms",
        "points": points or [
            {"name": "turbidity", "table": "holding", "address": 100, "type": "float32",
             "unit": "NTU"},
            {"name": "chlorine", "table": "holding", "address": 102, "type": "uint16",
             "scale": 0.01, "unit": "mg/L"},
        ],
    }
