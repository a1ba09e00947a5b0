"""Buses: the physical lines the core owns and lends to drivers, one owner per line.

This module owns `BusConfig` (the `buses:` entries of the config: a serial port with its line
settings, or a serial-to-Ethernet converter reached over TCP), and the byte-level ports drivers
talk through: `SerialPort` (pyserial) and `TcpPort` (a socket that is reused, and re-opened on
the next request after the peer dropped it or a timeout left it out of step). A port serializes
its users with a lock, keeps the line silent for the inter-frame delay between transactions,
opens itself on demand, and turns every I/O failure into a `DeviceTimeout` (silence) or a
`DeviceUnreachable` (the port or connection is gone), with the port's name in the message.
`read_available` hands whatever arrived to a core listener (`agent.transport.stream`) for
sensors that talk on their own. It knows nothing about Modbus or text protocols: framing is the
driver's. The scheduler gives each bus one worker thread, so requests on one line never overlap and
different lines poll in parallel.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import select
import socket
import termios
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Literal, Protocol, Self

import serial
from pydantic import Field, model_validator

from agent.core.configbase import NAME_PATTERN, Strict
from agent.core.errors import DeviceTimeout, DeviceUnreachable
from agent.core.units import Duration


class BusConfig(Strict):
    """A shared line: `port: /dev/ttyUSB0` (serial) or `host` + `port` (RTU over TCP)."""

    name: str = Field(pattern=NAME_PATTERN, max_length=64, description="bus name devices use")
    port: str | int = Field(description="serial device path, or TCP port when `host` is set")
    host: str | None = Field(default=None, min_length=1,
                             description="serial-to-Ethernet converter; the bus is RTU over TCP")
    baudrate: int = Field(default=9600, ge=300, le=4_000_000)
    parity: Literal["N", "E", "O", "none", "even", "odd"] = "N"
    stopbits: Literal[1, 2] = 1
    bytesize: Literal[7, 8] = 8
    timeout: Duration = Field(default=0.5, gt=0, description="reply timeout for devices on it")
    inter_frame_delay: Duration | None = Field(
        default=None, ge=0, le=10,
        description="silence between transactions; default 3.5 characters (at least 2 ms)",
    )

    @model_validator(mode="after")
    def _port_kind(self) -> Self:
        if self.host is None and not isinstance(self.port, str):
            raise ValueError(f"port {self.port} is a number: give a serial device path such "
                             "as /dev/ttyUSB0, or `host` for a serial-to-Ethernet converter")
        if self.host is not None and (not isinstance(self.port, int)
                                      or not 1 <= self.port <= 65535):
            raise ValueError(f"with `host`, port must be a TCP port 1..65535, not {self.port!r}")
        return self

    @property
    def address(self) -> str:
        """What the bus claims: the serial path or host:port; two buses may not share it."""
        return f"{self.host}:{self.port}" if self.host else str(self.port)

    @property
    def gap(self) -> float:
        """Inter-frame silence in seconds."""
        if self.inter_frame_delay is not None:
            return self.inter_frame_delay
        bits = 1 + self.bytesize + (0 if self.parity in ("N", "none") else 1) + self.stopbits
        return max(3.5 * bits / self.baudrate, 0.002)


class Port(Protocol):
    """A byte pipe to one or more devices. Callers hold `lock` for a whole transaction."""

    name: str
    lock: threading.RLock
    timeout: float
    opens: int

    def send(self, data: bytes) -> None: ...
    def recv(self, n: int, deadline: float) -> bytes: ...
    def recv_line(self, deadline: float) -> bytes: ...
    def read_available(self, timeout: float) -> bytes: ...
    def discard_input(self) -> None: ...
    def close(self) -> None: ...


class _PortBase(abc.ABC):
    """Lock, inter-frame gap, and the line-reading loop shared by both kinds of port."""

    def __init__(self, name: str, gap: float) -> None:
        self.name = name
        self.lock = threading.RLock()
        self.gap = gap
        self._quiet_since = 0.0
        self._buffer = b""
        self.opens = 0
        """How many times the port was opened: a listener sees a reopen by it changing."""

    def _wait_gap(self) -> None:
        wait = self._quiet_since + self.gap - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # line discipline (RS-485 turnaround), not synchronization

    @abc.abstractmethod
    def _read(self, timeout: float) -> bytes:
        """What arrives within `timeout` s (b"" if nothing); each kind of port its own."""

    def _read_some(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not (data := self._read(remaining)):
            raise self._silent()
        return data

    def read_available(self, timeout: float) -> bytes:
        """What arrives within `timeout` s (b"" if nothing), for callers that frame bytes
        themselves (`agent.transport.stream.Listener`); DeviceUnreachable when the port is gone."""
        if self._buffer:
            out, self._buffer = self._buffer, b""
            return out
        return self._read(timeout)

    def recv(self, n: int, deadline: float) -> bytes:
        """Exactly `n` bytes, or DeviceTimeout once `deadline` (monotonic) has passed."""
        while len(self._buffer) < n:
            self._buffer += self._read_some(deadline)
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        self._quiet_since = time.monotonic()
        return out

    def recv_line(self, deadline: float) -> bytes:
        """Bytes up to and including the next LF, or DeviceTimeout."""
        while b"\n" not in self._buffer:
            self._buffer += self._read_some(deadline)
        end = self._buffer.index(b"\n") + 1
        out, self._buffer = self._buffer[:end], self._buffer[end:]
        self._quiet_since = time.monotonic()
        return out

    def _silent(self) -> DeviceTimeout:
        got = f" (got {len(self._buffer)} byte(s) of a reply)" if self._buffer else ""
        self._buffer = b""
        self._quiet_since = time.monotonic()
        return DeviceTimeout(f"no reply on {self.name}{got}")


_LINE_ERRORS = (serial.SerialException, OSError, termios.error)
"""What a serial port raises once its adapter is gone: termios.error (tcflush, tcdrain and
tcsetattr on a hung-up pty or a pulled USB adapter, EIO) is not an OSError."""


class SerialPort(_PortBase):
    """A serial line (RS-485/RS-232 adapter), opened on first use and after a failure."""

    def __init__(self, config: BusConfig) -> None:
        super().__init__(f"bus {config.name} ({config.port})", config.gap)
        self.config = config
        self.timeout = config.timeout
        self._serial: serial.Serial | None = None

    def _open(self) -> serial.Serial:
        if self._serial is None:
            c = self.config
            parity = {"none": "N", "even": "E", "odd": "O"}.get(c.parity, c.parity)
            try:
                self._serial = serial.Serial(
                    str(c.port), baudrate=c.baudrate, parity=parity, stopbits=c.stopbits,
                    bytesize=c.bytesize, timeout=0, write_timeout=max(1.0, c.timeout),
                )
            except (serial.SerialException, OSError, ValueError, termios.error) as exc:
                raise DeviceUnreachable(f"cannot open {self.name}: {self._why(exc)}") from None
            self.opens += 1
        return self._serial

    def _why(self, exc: BaseException) -> str:
        """What went wrong, in words: termios refuses settings the adapter cannot do (a pty or
        some USB adapters refuse 7E1) with EINVAL, raised when pyserial applies them."""
        if isinstance(exc, termios.error) and exc.args and exc.args[0] == errno.EINVAL:
            c = self.config
            parity = {"none": "N", "even": "E", "odd": "O"}.get(c.parity, c.parity)
            return (f"the port refuses its line settings ({c.baudrate} baud, "
                    f"{c.bytesize}{parity}{c.stopbits}): check the bus's baudrate, parity, "
                    "bytesize and stopbits")
        return str(exc)

    def send(self, data: bytes) -> None:
        ser = self._open()
        self._wait_gap()
        try:
            ser.write(data)
            ser.flush()
        except _LINE_ERRORS as exc:
            self.close()
            raise DeviceUnreachable(f"cannot write to {self.name}: {self._why(exc)}") from None
        self._quiet_since = time.monotonic()

    def _read(self, timeout: float) -> bytes:
        ser = self._open()
        try:
            if ser.timeout != timeout:
                ser.timeout = timeout
            data = bytes(ser.read(max(1, ser.in_waiting)))
            if data and ser.in_waiting:  # the rest of a burst that woke us with its first byte
                data += bytes(ser.read(ser.in_waiting))
            return data
        except _LINE_ERRORS as exc:
            self.close()
            raise DeviceUnreachable(f"{self.name} failed: {self._why(exc)}") from None

    def discard_input(self) -> None:
        """Drop stale bytes (a late reply from a unit that already timed out)."""
        self._buffer = b""
        if self._serial is not None:
            try:
                self._serial.reset_input_buffer()
            except _LINE_ERRORS:
                self.close()

    def close(self) -> None:
        self._buffer = b""
        if self._serial is not None:
            with contextlib.suppress(Exception):
                self._serial.close()
            self._serial = None


class TcpPort(_PortBase):
    """A reused TCP connection; re-opened by the next request after it broke."""

    def __init__(self, host: str, port: int, timeout: float, gap: float = 0.0,
                 name: str | None = None) -> None:
        super().__init__(name or f"{host}:{port}", gap)
        self.host, self.port, self.timeout = host, port, timeout
        self._sock: socket.socket | None = None

    def _open(self) -> socket.socket:
        if self._sock is None:
            try:
                sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            except OSError as exc:
                raise DeviceUnreachable(f"cannot connect to {self.name}: "
                                        f"{exc.strerror or exc}") from None
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._sock, self._buffer = sock, b""
            self.opens += 1
        return self._sock

    def send(self, data: bytes) -> None:
        sock = self._open()
        self._wait_gap()
        try:
            sock.sendall(data)
        except OSError as exc:
            self.close()
            raise DeviceUnreachable(f"connection to {self.name} lost: "
                                    f"{exc.strerror or exc}") from None

    def _read(self, timeout: float) -> bytes:
        sock = self._open()
        if not select.select([sock], [], [], timeout)[0]:
            return b""
        try:
            data = sock.recv(4096)
        except OSError as exc:
            self.close()
            raise DeviceUnreachable(f"connection to {self.name} lost: "
                                    f"{exc.strerror or exc}") from None
        if not data:
            self.close()
            raise DeviceUnreachable(f"connection to {self.name} closed by the peer")
        return data

    def discard_input(self) -> None:
        self._buffer = b""
        sock = self._sock
        while sock is not None and select.select([sock], [], [], 0)[0]:
            try:
                if not sock.recv(4096):
                    self.close()
                    return
            except OSError:
                self.close()
                return

    def close(self) -> None:
        self._buffer = b""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None


def open_port(config: BusConfig) -> SerialPort | TcpPort:
    """The port for one bus (nothing is opened until its first request)."""
    if config.host is not None:
        assert isinstance(config.port, int)
        return TcpPort(config.host, config.port, config.timeout, config.gap,
                       name=f"bus {config.name} ({config.address})")
    return SerialPort(config)


def open_buses(configs: Sequence[BusConfig]) -> dict[str, SerialPort | TcpPort]:
    """bus name -> port, for every configured bus."""
    return {c.name: open_port(c) for c in configs}


def close_all(ports: Mapping[str, Port]) -> None:
    for port in ports.values():
        with port.lock:
            port.close()
