"""The MQTT uplink: one paho-mqtt client, its connection state, status messages and PUBACKs.

It connects in the background and reconnects by itself (paho's loop thread), keeps the retained
status topic truthful (online on every connect, offline on clean stop, offline as Last Will),
and reports each acknowledged message id to `on_ack`. It knows nothing about the queue: which
rows a message carried is the forwarder's business. `on_ack` runs on paho's network thread and
must only record the id (never take a lock that is held around `publish`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent import __version__, log
from agent.contract import encode_status, status_topic
from agent.errors import PublishError
from agent.model import now_ms
from agent.mqtt_config import MqttConfig

_OK_RCS = (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)  # NO_CONN: paho keeps it and resends


class Publisher:
    """Connects to the broker in the background; `publish()` hands messages to paho."""

    def __init__(self, cfg: MqttConfig, gateway: str, devices: Sequence[str],
                 on_ack: Callable[[int, bool], None],
                 on_connect: Callable[[], None] | None = None) -> None:
        self._cfg = cfg
        self._gateway = gateway
        self._devices = list(devices)
        self._on_ack = on_ack
        self._on_connect_hook = on_connect
        self._status_topic = status_topic(cfg.topic_prefix, gateway)
        self._stopping = False
        self.connected = threading.Event()
        self._log = log.get("uplink")
        self._episode = log.Episode(self._log, "uplink down", "uplink connected", 600.0)
        self._ever_connected = False
        self.connected_since_ms: int | None = None
        self.reconnects = 0  # connections made after the first
        self.last_error: str | None = None

        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"edge-agent-{gateway}",
            protocol=mqtt.MQTTv311,
            clean_session=True,
        )
        client.will_set(self._status_topic, encode_status(gateway, "offline", now_ms()),
                        qos=1, retain=True)
        client.reconnect_delay_set(max(1, round(cfg.reconnect_min)),
                                   max(1, round(cfg.reconnect_max)))
        client.max_inflight_messages_set(cfg.max_inflight)
        client.max_queued_messages_set(0)  # unbounded here; the forwarder bounds what it hands over
        client.on_connect = self._handle_connect
        client.on_connect_fail = self._handle_connect_fail
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        self._client = client

    def start(self) -> None:
        """Start connecting in the background; returns at once."""
        self._log.info("uplink connecting", host=self._cfg.host, port=self._cfg.port)
        self._client.connect_async(self._cfg.host, self._cfg.port, round(self._cfg.keepalive))
        self._client.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int | None = None,
                retain: bool = False) -> int:
        """Hand one message to paho; returns its message id for `on_ack`.

        Works while disconnected too: paho keeps the message and sends it after reconnect.
        Raises PublishError if paho refused the message outright.
        """
        info = self._client.publish(topic, payload, qos=self._cfg.qos if qos is None else qos,
                                    retain=retain)
        if info.rc not in _OK_RCS:
            raise PublishError(f"publish to {topic} refused: {mqtt.error_string(info.rc)}")
        return int(info.mid)

    def stop(self, timeout: float = 2.0) -> None:
        """Publish `offline` (retained) if connected, then disconnect cleanly."""
        self._stopping = True
        if self.connected.is_set():
            info = self._client.publish(
                self._status_topic, encode_status(self._gateway, "offline", now_ms()),
                qos=1, retain=True)
            # If the connection went away meanwhile, the Last Will says offline instead.
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout)
        self._client.disconnect()
        self._client.loop_stop()
        self.connected.clear()
        self._log.info("uplink closed")

    # paho callbacks (network thread)
    def _handle_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, reason: Any,
                        _props: Any) -> None:
        if reason.is_failure:
            self._episode.failed("down", cause=f"refused: {reason}", host=self._cfg.host,
                                 port=self._cfg.port)
            return
        client.publish(self._status_topic,
                       encode_status(self._gateway, "online", now_ms(), __version__,
                                     self._devices),
                       qos=1, retain=True)
        self.connected.set()
        self.connected_since_ms = now_ms()
        self.reconnects += self._ever_connected
        self.last_error = None
        if not self._episode.recovered(host=self._cfg.host) and not self._ever_connected:
            self._log.info("uplink connected", host=self._cfg.host, port=self._cfg.port)
        self._ever_connected = True
        if self._on_connect_hook is not None:
            self._on_connect_hook()

    def _handle_connect_fail(self, _client: mqtt.Client, _ud: Any) -> None:
        self._episode.failed("down", cause="unreachable", host=self._cfg.host,
                             port=self._cfg.port)

    def _handle_disconnect(self, _client: mqtt.Client, _ud: Any, _flags: Any, reason: Any,
                           _props: Any) -> None:
        self.connected.clear()
        if not self._stopping:
            self._episode.failed("down", cause=f"disconnected: {reason}")

    def _handle_publish(self, _client: mqtt.Client, _ud: Any, mid: int, reason: Any,
                        _props: Any) -> None:
        self._on_ack(mid, not reason.is_failure)
