"""Simulated serial Modbus lines for the tests and the demo: a virtual null-modem and a real
pymodbus RTU/ASCII server on its far end.

This module owns `NullModem` (two pseudo-terminals whose masters a thread cross-connects, so
whatever is written to one slave path can be read from the other, like `socat pty pty` without
socat) and `SerialSimulator` (the `ModbusSimulator` tables, dead units, busy replies and
damaged frames, served by pymodbus's `ModbusSerialServer` in RTU or ASCII framing on one end
of a null-modem). A pty ignores the baud rate: nothing here simulates line speed. Nothing in
the agent's runtime path imports it.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Iterable, Mapping

from pymodbus import FramerType
from pymodbus.server import ModbusBaseServer, ModbusSerialServer
from pymodbus.simulator import SimDevice

from agent.sim.modbus import ModbusSimulator


class NullModem:
    """Two serial device paths, `a` and `b`, wired to each other (raw, no echo)."""

    def __init__(self) -> None:
        self._fds: list[int] = []
        self._masters: list[int] = []
        paths = []
        for _ in range(2):
            master, slave = os.openpty()
            tty.setraw(slave)
            self._masters.append(master)
            self._fds += [master, slave]  # we keep the slave open: no hang-up between users
            paths.append(os.ttyname(slave))
        self.a, self.b = paths
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._pump, name="null-modem", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        one, two = self._masters
        peer = {one: two, two: one}
        while True:
            ready = select.select([one, two, self._stop_r], [], [])[0]
            if self._stop_r in ready:
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                    os.write(peer[fd], data)
                except OSError:
                    continue

    def close(self) -> None:
        """Stop the wire and release both pseudo-terminals; idempotent."""
        if self._thread.is_alive():
            os.write(self._stop_w, b"x")
            self._thread.join(5.0)
        for fd in [*self._fds, self._stop_r, self._stop_w]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []


class SerialSimulator(ModbusSimulator):
    """Modbus units answering RTU or ASCII on a serial path (one end of a `NullModem`).

    Like `ModbusSimulator` (`set_*`, `holes`, `set_busy`, `corrupt`), plus `silent`: units
    in that set are on the line but never answer, as a dead unit on RS-485 is; so are units
    that are not simulated at all (pymodbus itself would answer them with an exception).
    """

    def __init__(
        self, path: str, units: Iterable[int] = (1,), size: int = 1024, *,
        framer: str = "rtu", baudrate: int = 9600, verbose: bool = False,
        holes: Mapping[str, Iterable[int]] | None = None,
    ) -> None:
        super().__init__(0, units=units, size=size, verbose=verbose, holes=holes)
        if framer not in ("rtu", "ascii"):
            raise ValueError(f"framer must be 'rtu' or 'ascii', not {framer!r}")
        self.path, self.framer, self.baudrate = path, framer, baudrate
        self._server_ref: ModbusBaseServer | None = None

    @property
    def where(self) -> str:
        return f"{self.path} ({self.framer})"

    def _precheck(self) -> None:
        if not os.path.exists(self.path):
            raise RuntimeError(f"cannot serve Modbus on {self.where}: no such port")

    def _check_ready(self, timeout: float) -> object:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # the serial port opens asynchronously
            server = self._server_ref
            if server is not None and getattr(server, "transport", None) is not None:
                return None
            time.sleep(0.01)
        return f"port not open after {timeout} s"

    def _packet(self, sending: bool, packet: bytes) -> bytes:
        """On a serial line a unit that is not there is silent (pymodbus would answer)."""
        if sending and packet:
            unit = packet[0] if self.framer == "rtu" else int(packet[1:3], 16)
            if unit not in self.units:
                return b""
        return super()._packet(sending, packet)

    async def _server(self, devices: list[SimDevice]) -> ModbusBaseServer:
        framer = FramerType.RTU if self.framer == "rtu" else FramerType.ASCII
        server = ModbusSerialServer(
            devices, framer=framer, port=self.path, baudrate=self.baudrate,
            bytesize=8, trace_pdu=self._trace, trace_packet=self._packet, reconnect_delay=0.1,
        )
        await server.serve_forever(background=True)
        self._server_ref = server
        return server
