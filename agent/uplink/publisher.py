"""The MQTT uplink: one paho-mqtt client, its connection, status messages and PUBACKs.

This module owns the connection: its own network thread connects (TLS with verification unless
told otherwise, credentials read at connect time), runs paho's `loop()`, and reconnects with
exponential backoff and +-25% jitter so a fleet does not reconnect in lockstep; the backoff
starts over only after a connection stayed up `STABLE_AFTER` s, so a broker that closes every
connection right after accepting it is retried less and less often, not every second. Because it
makes the connect calls itself it knows why one failed (refused, untrusted certificate, expired,
bad credentials, client id refused) and logs that cause once per outage; polling and queueing
never wait for it. It keeps the retained status topic truthful (online at every connect, offline
on clean stop and as Last Will) and reports each acknowledged message id, and each (re)connect,
to the one listener that asked (`listen`: the forwarder, when it is built); both run on the
network thread and must only record. It knows nothing about the queue.
"""

from __future__ import annotations

import contextlib
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent import __version__
from agent.config.mqtt import MqttConfig, TlsConfig
from agent.core import log
from agent.core.errors import PublishError
from agent.core.model import now_ms
from agent.uplink.contract import encode_status, status_topic

_OK_RCS = (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN)  # NO_CONN: paho keeps it and resends
STABLE_AFTER = 10.0
"""Seconds a connection must last before the reconnect backoff starts over from reconnect_min."""


def tls_context(cfg: TlsConfig) -> ssl.SSLContext:
    """A client context: verification on (CA file or system CAs), TLS >= min_version."""
    try:
        ctx = ssl.create_default_context(cafile=cfg.ca_file)
        if cfg.cert_file and cfg.key_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise PublishError(f"cannot load the TLS files: {exc}") from exc
    ctx.minimum_version = (ssl.TLSVersion.TLSv1_3 if cfg.min_version == "1.3"
                           else ssl.TLSVersion.TLSv1_2)
    if cfg.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def describe_failure(exc: BaseException, host: str, port: int) -> str:
    """Why a connect attempt failed, in the words a technician needs."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate is not trusted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"connection refused by {host}:{port} (broker down or wrong port)"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {host}: {exc.strerror}"
    if isinstance(exc, TimeoutError):
        return f"no answer from {host}:{port} (network down or filtered)"
    return f"{host}:{port}: {exc.strerror or exc}" if isinstance(exc, OSError) else repr(exc)


def _ignore_ack(_mid: int, _refused: str | None) -> None:
    """No listener yet: a PUBACK nobody waits for."""


def _nothing(*_args: Any) -> None:
    """No listener for this event."""


class Publisher:
    """Connects to the broker in the background; `publish()` hands messages to paho."""

    def __init__(self, cfg: MqttConfig, gateway: str, devices: Sequence[str]) -> None:
        self._cfg = cfg
        self._gateway = gateway
        self._devices = list(devices)
        self._on_ack: Callable[[int, str | None], None] = _ignore_ack
        self._on_connect_hook: Callable[[], None] | None = None
        self._on_disconnect: Callable[[], None] = _nothing
        self._on_echo: Callable[[bytes], None] = _nothing
        self._status_topic = status_topic(cfg.topic_prefix, gateway)
        self.echo_topic = f"{cfg.topic_prefix}/{gateway}/echo"
        self.verifies = cfg.protocol == "3.1.1" and cfg.verify_delivery
        """Under 3.1.1 the broker cannot refuse a publish: the forwarder verifies by an echo."""
        self.max_packet: int | None = None  # the broker's Maximum Packet Size (MQTT 5 CONNACK)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._delay = cfg.reconnect_min
        self._up_since: float | None = None  # monotonic time the current connection was accepted
        self._accepted = self._refused = False  # what became of the current connection attempt
        self.connected = threading.Event()
        self._log = log.get("uplink")
        self._episode = log.Episode(self._log, "uplink down", "uplink connected", 600.0)
        self._ever_connected = False
        self.connected_since_ms: int | None = None
        self.reconnects = 0  # connections made after the first
        self.last_error: str | None = None
        self.attempts = 0  # connection attempts made

        v5 = cfg.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.client_id or f"edge-agent-{gateway}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
        )
        client.will_set(self._status_topic, encode_status(gateway, "offline", now_ms()),
                        qos=1, retain=True)
        if cfg.tls is not None:
            client.tls_set_context(tls_context(cfg.tls))
            if cfg.tls.insecure:
                client.tls_insecure_set(True)
                self._log.warning("TLS verification is OFF (mqtt.tls.insecure: true): anyone "
                                  "on the path can read and forge this gateway's traffic")
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password())
        client.max_inflight_messages_set(cfg.max_inflight)
        client.max_queued_messages_set(0)  # unbounded here; the forwarder bounds what it hands over
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        self._client = client

    def start(self) -> None:
        """Start connecting in the background; returns at once."""
        self._log.info("uplink connecting", host=self._cfg.host, port=self._cfg.port,
                       tls=self._cfg.tls is not None, protocol=self._cfg.protocol)
        self._thread = threading.Thread(target=self._run, name="uplink", daemon=True)
        self._thread.start()

    def listen(self, on_ack: Callable[[int, str | None], None],
               on_connect: Callable[[], None] | None = None,
               on_disconnect: Callable[[], None] | None = None,
               on_echo: Callable[[bytes], None] | None = None) -> None:
        """Report each PUBACK to `on_ack` (message id, and None or why the broker refused it),
        each accepted connection to `on_connect`, each lost one to `on_disconnect`, and each
        message on the echo topic to `on_echo` (3.1.1 with verify_delivery), on the network
        thread; called once, before `start` (by the forwarder)."""
        self._on_ack = on_ack
        self._on_connect_hook = on_connect
        self._on_disconnect = on_disconnect or _nothing
        self._on_echo = on_echo or _nothing

    def subscribe_echo(self) -> None:
        """(Again) subscribe to the echo topic: a subscription the ACL refused stays refused."""
        self._client.subscribe(self.echo_topic, qos=1)

    def forget(self, mids: Sequence[int]) -> None:
        """Drop messages from paho's resend store (a message the broker will never take: paho
        would resend it after every reconnect, and the broker close the connection again)."""
        client: Any = self._client
        with client._out_message_mutex:  # paho 2.x keeps unacknowledged QoS 1 messages here
            for mid in mids:
                client._out_messages.pop(mid, None)
                client._inflight_messages = max(0, client._inflight_messages - 1)

    def publish(self, topic: str, payload: bytes, qos: int | None = None,
                retain: bool = False) -> int:
        """Hand one message to paho; returns its message id for `on_ack` (see `listen`).

        Works while disconnected too: paho keeps the message and sends it after reconnect.
        Raises PublishError if paho refused the message outright.
        """
        info = self._client.publish(topic, payload, qos=self._cfg.qos if qos is None else qos,
                                    retain=retain)
        if info.rc not in _OK_RCS:
            raise PublishError(f"publish to {topic} refused: {mqtt.error_string(info.rc)}")
        return int(info.mid)

    @property
    def alive(self) -> bool:
        """Its network thread runs (until `stop`): the watchdog checks it (agent.systemd)."""
        return self._thread is None or self._thread.is_alive() or self._stop.is_set()

    def set_devices(self, devices: Sequence[str]) -> None:
        """The device list changed (reload): say so in the retained `online` status now."""
        self._devices = list(devices)
        if self.connected.is_set():
            self.publish(self._status_topic,
                         encode_status(self._gateway, "online", now_ms(), __version__,
                                       self._devices), qos=1, retain=True)

    def stop(self, timeout: float = 2.0) -> None:
        """Publish `offline` (retained) if connected, then disconnect. When `offline` was not
        acknowledged in time (a full in-flight window on a slow link), the broker is told to
        publish the Last Will instead (MQTT 5: DISCONNECT with reason 4; 3.1.1: the connection
        is dropped without DISCONNECT), so the retained status says offline either way."""
        said = not self.connected.is_set()  # not connected: the Last Will already said it
        if not said:
            info = self._client.publish(
                self._status_topic, encode_status(self._gateway, "offline", now_ms()),
                qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout)
            said = info.is_published()
        self._stop.set()
        with contextlib.suppress(Exception):
            if said:
                self._client.disconnect()
            elif self._cfg.protocol == "5":
                self._client.disconnect(reasoncode=ReasonCode(
                    PacketTypes.DISCONNECT, "Disconnect with will message"))
            else:
                sock = self._client.socket()
                if isinstance(sock, socket.socket):
                    sock.shutdown(socket.SHUT_RDWR)  # no DISCONNECT: the will is published
        if self._thread is not None:
            self._thread.join(timeout + 1)
        self.connected.clear()
        self._log.info("uplink closed")

    # the network thread
    def _run(self) -> None:
        # paho writes packets itself from publish() when it believes no network thread runs
        # (`_thread is None`): two threads writing would reorder messages. Tell it this is its
        # network thread, as loop_start() would; we only run our own loop to own reconnects.
        self._client._thread = threading.current_thread()
        self._client.connect_async(self._cfg.host, self._cfg.port, round(self._cfg.keepalive))
        while not self._stop.is_set():
            self._accepted = self._refused = False
            self.attempts += 1
            try:
                self._client.reconnect()  # TCP, TLS handshake, CONNECT
            except (OSError, ssl.SSLError, ValueError) as exc:
                self._fail(describe_failure(exc, self._cfg.host, self._cfg.port))
                self._backoff()
                continue
            while not self._stop.is_set() and self._client.loop(timeout=0.2) == 0:
                pass
            if self._up_since is not None and time.monotonic() - self._up_since >= STABLE_AFTER:
                self._delay = self._cfg.reconnect_min  # it was a real connection: start over
            self._up_since = None
            self.connected.clear()
            if self._stop.is_set():
                break
            if not self._accepted and not self._refused:
                hint = ("client certificate required or rejected?" if self._cfg.tls else
                        "a TLS port? then set mqtt.tls")
                self._fail(f"the broker closed the connection before accepting it ({hint})")
            self._backoff()

    def _backoff(self) -> None:
        delay = self._delay * random.uniform(0.75, 1.25)
        self._delay = min(self._delay * 2, self._cfg.reconnect_max)
        self._stop.wait(delay)

    def _fail(self, cause: str) -> None:
        self.last_error = cause
        self._episode.failed("down", cause=cause, host=self._cfg.host, port=self._cfg.port)

    # paho callbacks (network thread)
    def _handle_connect(self, client: mqtt.Client, _ud: Any, _flags: Any, reason: Any,
                        _props: Any) -> None:
        if reason.is_failure:
            self._refused = True
            self._fail(f"the broker refused the connection: {reason}")
            return
        self._accepted = True
        size = getattr(_props, "MaximumPacketSize", None) if _props is not None else None
        self.max_packet = int(size) if size else None
        if self.verifies:
            client.subscribe(self.echo_topic, qos=1)
        client.publish(self._status_topic,
                       encode_status(self._gateway, "online", now_ms(), __version__,
                                     self._devices),
                       qos=1, retain=True)
        self._up_since = time.monotonic()
        self.connected.set()
        self.connected_since_ms = now_ms()
        self.reconnects += self._ever_connected
        self.last_error = None
        if not self._episode.recovered(host=self._cfg.host) and not self._ever_connected:
            self._log.info("uplink connected", host=self._cfg.host, port=self._cfg.port)
        self._ever_connected = True
        if self._on_connect_hook is not None:
            self._on_connect_hook()

    def _handle_disconnect(self, _client: mqtt.Client, _ud: Any, _flags: Any, reason: Any,
                           _props: Any) -> None:
        was_up = self.connected.is_set()
        self.connected.clear()
        if was_up and not self._stop.is_set():
            self._fail(f"disconnected: {reason}")
            self._on_disconnect()

    def _handle_publish(self, _client: mqtt.Client, _ud: Any, mid: int, reason: Any,
                        _props: Any) -> None:
        self._on_ack(mid, f"{reason} ({reason.value})" if reason.is_failure else None)

    def _handle_message(self, _client: mqtt.Client, _ud: Any, message: Any) -> None:
        if message.topic == self.echo_topic:
            self._on_echo(bytes(message.payload))
