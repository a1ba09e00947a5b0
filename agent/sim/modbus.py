"""Simulated Modbus TCP devices for the demo and the tests: real pymodbus servers on loopback.

This module owns `ModbusSimulator` (a pymodbus 3.16 `SimDevice` server with four separate
tables per unit, run on its own asyncio loop in a background thread, whose registers and bits
other threads set atomically) and `WaterPlant` (a preset that models a small water-treatment
PLC and writes its values into a simulator). Nothing in the agent's runtime path imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import socket
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusBaseServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimAction, SimData, SimDevice

from drivers.modbus.codec import decode, encode

_BLOCK = {"coil": "c", "discrete": "d", "holding": "h", "input": "i"}
# Function code -> table, as pymodbus.simulator.simruntime maps them for separate blocks.
_FC_BLOCK = {1: "c", 5: "c", 15: "c", 2: "d", 3: "h", 6: "h", 16: "h", 22: "h", 23: "h", 4: "i"}
_QUIET = "modbus-sim:"  # pymodbus's log records from server threads named so are dropped
logging.getLogger("pymodbus.logging").addFilter(
    lambda record: not (record.threadName or "").startswith(_QUIET)
)


class ModbusSimulator:
    """A Modbus TCP server on loopback in a background thread (its own asyncio loop).

    Each unit has four tables (coil, discrete, holding, input) of `size` addresses, all
    initially 0. Requests past the end answer exception 2 (a bit request that starts inside
    may run on to the next multiple of 16); unknown unit ids answer exception 4. Values set
    with `set_*` survive `stop()`/`start()` of the same object, values written by clients
    do not. `verbose=True` keeps pymodbus's own logging (e.g. ERROR for unknown units).
    """

    framer = "mbap"

    def __init__(
        self, port: int, host: str = "127.0.0.1", units: Iterable[int] = (1,),
        size: int = 1024, *, verbose: bool = False,
        holes: Mapping[str, Iterable[int]] | None = None,
    ) -> None:
        self.port, self.host, self.units, self.size = port, host, tuple(units), size
        self.holes = {_BLOCK[t]: frozenset(a) for t, a in (holes or {}).items()}
        if set(self.holes) - {"h", "i"}:
            raise ValueError("holes are for the holding and input tables")
        self.silent: set[int] = set()  # units that never answer (a dead unit on the line)
        self.corrupt = 0  # replies still to send with a broken checksum / garbage
        self._busy: dict[int, int] = {}
        if not self.units or any(not 1 <= u <= 255 for u in self.units):
            raise ValueError(f"units must be ids in 1..255, got {self.units}")
        if not 1 <= size <= 65536:
            raise ValueError(f"size must be in 1..65536, got {size}")
        self.verbose, self.requests = verbose, 0
        self._lock = threading.Lock()
        self._state: dict[tuple[int, str], dict[int, int]] = {}  # all values set via set_*
        self._pending: dict[tuple[int, str], dict[int, int]] = {}  # not yet in the server
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 5.0) -> None:
        """Serve; returns once a TCP connect succeeds, else raises RuntimeError with the reason."""
        if self._thread is not None:
            raise RuntimeError(f"simulator on {self.where} is already running")
        self._precheck()
        ready, self._error, self._loop = threading.Event(), None, asyncio.new_event_loop()
        self._stopping.clear()
        name = ("modbus-sim-verbose:" if self.verbose else _QUIET) + str(self.port)
        self._thread = threading.Thread(
            target=self._run, args=(self._loop, ready), name=name, daemon=True
        )
        self._thread.start()
        reason: object = None
        if not ready.wait(timeout) or self._error is not None:
            reason = self._error or f"not listening after {timeout} s"
        else:
            reason = self._check_ready(timeout)
        if reason is not None:
            self.stop()
            raise RuntimeError(f"cannot serve Modbus on {self.where}: {reason}")

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    def _precheck(self) -> None:
        try:  # pymodbus only logs why listen() failed: find the reason ourselves
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((self.host, self.port))
        except OSError as exc:
            raise RuntimeError(f"cannot serve Modbus on {self.where}: {exc}") from exc

    def _check_ready(self, timeout: float) -> object:
        """None once the server answers, else the reason it does not."""
        try:  # listen() has returned: one connect proves it
            socket.create_connection((self.host, self.port), timeout=timeout).close()
        except OSError as exc:
            return exc
        return None

    def stop(self) -> None:
        """Close the server, its connections and its thread; idempotent; frees the port."""
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        self._stopping.set()  # before call_soon: _run checks it once the server is up
        with contextlib.suppress(RuntimeError):  # loop closed: the thread is ending anyway
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10.0)
        self._thread = self._loop = None

    def _run(self, loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        server: ModbusBaseServer | None = None
        try:
            server = loop.run_until_complete(self._serve())
            ready.set()
            if not self._stopping.is_set():
                loop.run_forever()
        except Exception as exc:  # e.g. stop() before the server was up
            self._error = exc
            ready.set()
        finally:
            if server is not None:
                loop.run_until_complete(server.shutdown())
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(asyncio.sleep(0))  # let closed transports release sockets
            loop.close()

    async def _serve(self) -> ModbusBaseServer:
        with self._lock:
            self._pending.clear()
            devices = [self._device(unit) for unit in self.units]
        return await self._server(devices)

    async def _server(self, devices: list[SimDevice]) -> ModbusBaseServer:
        server = ModbusTcpServer(devices, address=(self.host, self.port), trace_pdu=self._trace,
                                 trace_packet=self._packet)
        await server.serve_forever(background=True)
        return server

    def _device(self, unit: int) -> SimDevice:
        tables = []
        for block in "cdhi":
            values = [0] * self.size
            for address, value in self._state.get((unit, block), {}).items():
                values[address] = value
            if block in "cd":
                tables.append([SimData(0, values=[v != 0 for v in values],
                                       datatype=DataType.BITS)])
                continue
            holes, runs = self.holes.get(block, frozenset()), []
            start = 0
            for address in range(self.size + 1):  # runs of valid registers, holes as INVALID
                if address == self.size or address in holes:
                    if address > start:
                        runs.append(SimData(start, values=values[start:address],
                                            datatype=DataType.REGISTERS))
                    if address < self.size:
                        runs.append(SimData(address, count=1, datatype=DataType.INVALID))
                    start = address + 1
            tables.append(runs)
        simdata = (tables[0], tables[1], tables[2], tables[3])
        return SimDevice(id=unit, simdata=simdata, action=self._action(unit))

    def _trace(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending:
            self.requests += 1
        return pdu

    def _packet(self, sending: bool, packet: bytes) -> bytes:
        """Outgoing frames of silent units are dropped; `corrupt` spoils the next replies."""
        if not sending or not packet:
            return packet
        unit = {"mbap": lambda: packet[6], "rtu": lambda: packet[0],
                "ascii": lambda: int(packet[1:3], 16)}[self.framer]()
        if unit in self.silent:
            return b""
        if self.corrupt > 0:
            self.corrupt -= 1
            return packet[:-3] + bytes([packet[-3] ^ 0x55]) + packet[-2:]
        return packet

    def set_busy(self, unit: int, replies: int) -> None:
        """Answer the next `replies` requests to `unit` with exception 6 (device busy)."""
        with self._lock:
            self._busy[unit] = replies
    def _action(self, unit: int) -> SimAction:
        """The SimDevice hook: applies pending updates to the table a request is about to use.

        It runs on the server loop right before the request reads (or writes) the table, with
        no await in between, so a multi-register update set in one call is never seen half.
        """

        async def action(
            function_code: int, start_address: int, address: int, _count: int,
            registers: list[int], _values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            block = _FC_BLOCK.get(function_code)
            if block in ("c", "d") and address >= self.size:  # inside the 16-bit padding
                return ExcCodes.ILLEGAL_ADDRESS
            if self._busy.get(unit):
                with self._lock:
                    self._busy[unit] -= 1
                return ExcCodes.DEVICE_BUSY
            if not self._pending:
                return None
            with self._lock:
                updates = self._pending.pop((unit, block or ""), None)
            if updates is None:
                return None
            if block in ("c", "d"):
                for addr, value in updates.items():
                    index, mask = addr // 16 - start_address, 1 << (addr % 16)
                    registers[index] = (registers[index] | mask) if value else (
                        registers[index] & ~mask)
            else:
                for addr, value in updates.items():
                    registers[addr - start_address] = value
            return None

        return action

    def _set(self, unit: int, table: str, address: int, values: Sequence[int]) -> None:
        if unit not in self.units:
            raise ValueError(f"unit {unit} is not simulated (units {self.units})")
        if address < 0 or address + len(values) > self.size:
            raise ValueError(
                f"addresses {address}..{address + len(values) - 1} outside 0..{self.size - 1}"
            )
        key = (unit, _BLOCK[table])
        with self._lock:
            state = self._state.setdefault(key, {})
            pending = self._pending.setdefault(key, {})
            for offset, value in enumerate(values):
                state[address + offset] = pending[address + offset] = value

    def set_registers(self, unit: int, table: str, address: int, values: Sequence[int]) -> None:
        """Set `values` at `address` of the "holding" or "input" table; atomic per call."""
        if table not in ("holding", "input"):
            raise ValueError(f"table must be 'holding' or 'input', not {table!r}")
        if any(not 0 <= v <= 0xFFFF for v in values):
            raise ValueError(f"register values must be in 0..65535: {list(values)}")
        self._set(unit, table, address, [int(v) for v in values])

    def set_bits(self, unit: int, table: str, address: int, values: Sequence[bool]) -> None:
        """Set `values` at `address` of the "coil" or "discrete" table; atomic per call."""
        if table not in ("coil", "discrete"):
            raise ValueError(f"table must be 'coil' or 'discrete', not {table!r}")
        self._set(unit, table, address, [1 if v else 0 for v in values])

    def set_value(
        self, unit: int, table: str, address: int, type_: str, value: Any,
        order: str = "ABCD", length: int | None = None,
    ) -> None:
        """Encode one typed value with `modbus_codec.encode` and set it (bool: one bit)."""
        if type_ == "bool":
            self.set_bits(unit, table, address, [bool(value)])
        else:
            self.set_registers(unit, table, address, encode(value, type_, order, length))


class WaterPlant:
    """A simulated water-treatment PLC: pH, turbidity (NTU), free chlorine (mg/L), flow
    (m3/h), tank level (%), water temperature, a volume totaliser, pump running (coil).

    The holding registers 0..9 are written in one atomic call per `tick`, the pump coil and
    the low-level alarm (discrete input) in one call each. `speed` is simulated seconds per
    real second (the model's day is 86,400 simulated seconds). Deterministic given `seed` and
    the `now` values passed to `tick`.
    """

    POINTS: ClassVar[list[dict[str, Any]]] = [
        {"name": name, "table": table, "address": address, "type": type_}
        | ({"scale": scale} if scale != 1 else {}) | ({"unit": unit} if unit else {})
        for name, table, address, type_, scale, unit in [
            ("ph", "holding", 0, "float32", 1, "pH"),
            ("turbidity", "holding", 2, "float32", 1, "NTU"),
            ("chlorine", "holding", 4, "uint16", 0.01, "mg/L"),
            ("flow", "holding", 5, "uint16", 0.1, "m3/h"),
            ("tank_level", "holding", 6, "uint16", 0.1, "%"),
            ("water_temp", "holding", 7, "int16", 0.1, "degC"),
            ("total_volume", "holding", 8, "uint32", 1, "m3"),
            ("pump_running", "coil", 0, "bool", 1, None),
            ("low_level_alarm", "discrete", 0, "bool", 1, None),
        ]
    ]
    TANK_M3: ClassVar[float] = 60.0  # a small clear-water tank: the pump cycles in about an hour

    def __init__(
        self, sim: ModbusSimulator, unit: int = 1, seed: int | None = None, *, speed: float = 1.0
    ) -> None:
        self.sim, self.unit, self.speed = sim, unit, speed
        self._rng = random.Random(seed)
        r = self._rng
        self.ph = 7.2 + r.uniform(-0.1, 0.1)
        self.turbidity_base = r.uniform(0.2, 0.4)
        self.spike = 0.0
        self.chlorine = r.uniform(0.8, 1.2)
        self.level = r.uniform(40.0, 70.0)
        self.pump = r.random() < 0.5
        self.total = float(r.randint(10_000, 500_000))
        self._phase = r.uniform(0.0, 2 * math.pi)  # where in its "day" the plant starts
        self._t0: float | None = None
        self._last = 0.0
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _ou(self, x: float, mean: float, rate: float, sigma: float, dt: float) -> float:
        """One Ornstein-Uhlenbeck step: drift back to `mean` plus noise, scaled for `dt`."""
        return x + (mean - x) * min(1.0, rate * dt) + sigma * math.sqrt(dt) * self._rng.gauss()

    def tick(self, now: float | None = None) -> dict[str, float | bool]:
        """Advance the model to `now` (wall-clock seconds), write the registers, return values."""
        now = time.time() if now is None else now
        if self._t0 is None:
            self._t0 = self._last = now
        dt = min(max(now - self._last, 0.0), 3600.0) * self.speed
        self._last = now
        r = self._rng
        day = 2 * math.pi * ((now - self._t0) * self.speed / 86_400.0) + self._phase
        self.ph = min(7.5, max(6.9, self._ou(self.ph, 7.2, 1 / 1800, 0.003, dt)))
        self.turbidity_base = self._ou(self.turbidity_base, 0.3, 1 / 900, 0.002, dt)
        self.spike *= math.exp(-dt / 60.0)
        if r.random() < 1.0 - math.exp(-dt / 600.0):  # a small spike every ~10 minutes
            self.spike += r.uniform(0.15, 0.45)
        turbidity = min(1.0, max(0.1, self.turbidity_base + self.spike + r.gauss(0, 0.01)))
        self.chlorine = min(1.5, max(0.5, self._ou(self.chlorine, 1.0, 1 / 1200, 0.003, dt)))
        temp = 12.0 + 2.0 * math.sin(day - 1.0) + r.gauss(0, 0.05)
        if self.level < 30.0:  # the level controller, with hysteresis
            self.pump = True
        elif self.level > 80.0:
            self.pump = False
        flow = max(0.0, 150.0 + 20.0 * math.sin(day) + r.gauss(0, 2.0)) if self.pump else 0.0
        demand = max(0.0, 80.0 + 40.0 * math.sin(day + 0.3) + r.gauss(0, 4.0))
        self.level += (flow - demand) * dt / 3600.0 / self.TANK_M3 * 100.0
        self.level = min(100.0, max(0.0, self.level))
        self.total += flow * dt / 3600.0
        engineering = {
            "ph": self.ph, "turbidity": turbidity, "chlorine": self.chlorine, "flow": flow,
            "tank_level": self.level, "water_temp": temp, "total_volume": int(self.total) % 2**32,
        }
        alarm = self.level < 32.0  # lights as the pump is called, clears once it has refilled
        values: dict[str, float | bool] = {"pump_running": self.pump, "low_level_alarm": alarm}
        registers = [0] * 10
        for point in self.POINTS[:7]:  # the holding registers, through the register map
            type_, scale = point["type"], point.get("scale", 1)
            raw = engineering[point["name"]] / scale
            regs = encode(raw if type_ == "float32" else round(raw), type_)
            registers[point["address"]:point["address"] + len(regs)] = regs
            value = float(decode(regs, type_))
            values[point["name"]] = round(value * scale, 9) if scale != 1 else value
        self.sim.set_registers(self.unit, "holding", 0, registers)
        self.sim.set_bits(self.unit, "coil", 0, [self.pump])
        self.sim.set_bits(self.unit, "discrete", 0, [alarm])
        return values

    def run(self, period: float = 0.5) -> None:
        """Tick now and then every `period` seconds in a background thread until `stop()`."""
        if self._thread is not None:
            raise RuntimeError("WaterPlant is already running")
        self._stop.clear()

        def loop() -> None:
            while True:
                self.tick()
                if self._stop.wait(period):
                    return

        self._thread = threading.Thread(target=loop, name="water-plant", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the background ticking (idempotent); the registers keep their last values."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None

