"""The counting world: simulated devices whose values carry a sequence, the agent as a real
process under its real CLI, a real Mosquitto behind a cut-able proxy, and a subscriber that
records every reading with its arrival time.

Each device has a counter point `n` that its simulator increments once per answer and records
(value -> time served), so the ledger can tell a poll lost between the device and the queue
(only the poll in progress at a `kill -9` may be) from one never made.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from agent.sim.broker import LocalBroker, free_port
from agent.sim.modbus import ModbusSimulator
from tests.chaos.proxy import CutProxy
from tests.peers.line_sensor import LineSensor
from tests.peers.serial_modbus import NullModem, SerialSimulator
from tests.support import EDGE_AGENT, Collector, next_seq_in

DEVICES = ("plc", "rtu", "line")
COUNTER_POINTS = [
    {"name": "n", "table": "holding", "address": 0, "type": "uint32"},
    {"name": "level", "table": "holding", "address": 2, "type": "uint16", "scale": 0.1},
]


class Served:
    """Counter values a simulated device handed out: value -> monotonic time; damaged ones."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: dict[int, float] = {}  # monotonic
        self.walls: dict[int, float] = {}  # epoch seconds, to compare with readings' ts
        self.damaged: set[int] = set()
        self.last = 0

    def next(self) -> int:
        with self.lock:
            self.last += 1
            self.times[self.last] = time.monotonic()
            self.walls[self.last] = time.time()
            return self.last


def _counting(sim: ModbusSimulator, served: Served) -> None:
    """Wrap the simulator's per-request hook: each read covering register 0 takes a new count."""
    parent = sim._action

    def action_for(unit: int) -> Any:
        inner = parent(unit)

        async def action(fc: int, start: int, address: int, count: int, registers: list[int],
                         values: Any) -> Any:
            result = await inner(fc, start, address, count, registers, values)
            if result is None and fc == 3 and address <= 0 < address + count and start <= 0:
                n = served.next()
                registers[0 - start], registers[1 - start] = n >> 16, n & 0xFFFF
                registers[2 - start] = n % 1000
            return result

        return action

    sim._action = action_for  # type: ignore[method-assign]
    spoil = sim._packet

    def packet(sending: bool, data: bytes) -> bytes:
        if sending and data and sim.corrupt > 0:
            served.damaged.add(served.last)
        return spoil(sending, data)

    sim._packet = packet  # type: ignore[method-assign]


class CountingLine:
    """A polled text sensor: answers READ with `N=<count>,T=<temp>`, or garbage when told."""

    def __init__(self, link: Path) -> None:
        self.served = Served()
        self.garbage = 0
        self.sensor = LineSensor(link)
        self.sensor.reply({b"READ\r\n": self._answer})

    def _answer(self) -> bytes:
        if self.garbage > 0:
            self.garbage -= 1
            return b"\x00\xffN=##,T=\x7f?\r\n"
        n = self.served.next()
        return f"N={n},T={20 + n % 10 / 10:.1f}\r\n".encode()


OPEN_ACL = "topic readwrite #\n"
"""The world's broker lets everyone do everything, until a fault says otherwise."""
DENY_TELEMETRY_ACL = ("topic read #\ntopic readwrite city/+/echo\ntopic write city/+/status\n"
                      "topic write city/+/health\n")
"""A mistyped ACL: status and health allowed, telemetry forgotten."""


class World:
    """Everything the agent talks to, plus the agent process; `close()` stops all of it."""

    def __init__(self, workdir: Path, queue_dir: Path) -> None:
        self.dir = workdir
        self.queue_db = queue_dir / "queue.db"
        self.acl = workdir / "broker.acl"
        self.acl.write_text(OPEN_ACL)
        self.broker = LocalBroker(workdir / "broker", persistent=True,
                                  listener_options=[f"acl_file {self.acl}"])
        self.broker.start()
        self.proxy = CutProxy(self.broker.port)
        self.collector = StampedCollector(self.broker.port)
        self.served = {name: Served() for name in ("plc", "rtu")}
        self.plc = ModbusSimulator(port=free_port())
        _counting(self.plc, self.served["plc"])
        self.plc.start()
        self.modem = NullModem()
        self.rtu = SerialSimulator(self.modem.b)
        _counting(self.rtu, self.served["rtu"])
        self.rtu.start()
        self.line = CountingLine(workdir / "line-sensor")
        self.served["line"] = self.line.served
        self.config = workdir / "agent.yaml"
        self.interval = "100ms"
        self.write_config()
        self.log = workdir / "agent.log"
        self.agent: subprocess.Popen[bytes] | None = None
        self.kills: list[float] = []  # monotonic times of kill -9

    def config_dict(self) -> dict[str, Any]:
        return {
            "gateway": {"id": "chaos-gw", "site": "lab"},
            "mqtt": {"host": "127.0.0.1", "port": self.proxy.port, "keepalive": "5s",
                     "reconnect_min": "200ms", "reconnect_max": "1s", "health_interval": "5s"},
            "queue": {"path": str(self.queue_db), "min_free": "1MB"},
            "log": {"level": "info", "format": "json"},
            "buses": [
                {"name": "rs485", "port": self.modem.a, "timeout": "300ms"},
                {"name": "line", "port": str(self.line.sensor.link), "timeout": "300ms"},
            ],
            "devices": [
                {"name": "plc", "driver": "modbus_tcp", "host": "127.0.0.1",
                 "port": self.plc.port, "unit": 1, "interval": self.interval,
                 "timeout": "300ms", "points": COUNTER_POINTS},
                {"name": "rtu", "driver": "modbus_rtu", "bus": "rs485", "unit": 1,
                 "interval": "150ms", "points": COUNTER_POINTS},
                {"name": "line", "driver": "serial_line", "bus": "line", "mode": "poll",
                 "command": "READ\\r\\n", "format": "pairs", "interval": "200ms",
                 "points": [{"name": "n", "key": "N", "type": "int"},
                            {"name": "temp", "key": "T", "unit": "degC"}]},
            ],
        }

    def write_config(self, text: str | None = None) -> None:
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(text if text is not None else json.dumps(self.config_dict(), indent=1))
        os.replace(tmp, self.config)

    # the agent process ------------------------------------------------------------------
    def start_agent(self) -> None:
        with self.log.open("ab") as out:
            self.agent = subprocess.Popen([*EDGE_AGENT, "run", "-c", str(self.config)],
                                          stdout=out, stderr=out, stdin=subprocess.DEVNULL)

    def kill_agent(self) -> None:
        assert self.agent is not None
        self.agent.send_signal(signal.SIGKILL)
        self.kills.append(time.monotonic())
        self.agent.wait()

    def stop_agent(self) -> int:
        proc, self.agent = self.agent, None
        if proc is None:
            return 0
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return -9

    def log_count(self, event: str) -> int:
        """How many log lines of the agent's (all runs) carry `event`."""
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return 0
        return sum(1 for line in text.splitlines() if f'"{event}"' in line)

    def next_seq(self) -> int:
        return next_seq_in(self.queue_db)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_agent()
        for stop in (self.collector.stop, self.proxy.close, self.plc.stop, self.rtu.stop,
                     self.modem.close, self.line.sensor.close, self.broker.resume,
                     self.broker.stop):
            with contextlib.suppress(Exception):
                stop()


class StampedCollector(Collector):
    """The suite's schema-validating collector, with each message's arrival time kept."""

    def __init__(self, port: int) -> None:
        self.arrivals: list[float] = []
        super().__init__(port, client_id="chaos-collector")

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:  # re-entrant: arrival and message are appended together
            self.arrivals.append(time.monotonic())
            super()._on_message(c, u, msg)

    def stamped(self, start: int = 0) -> list[tuple[float, dict[str, Any]]]:
        """(arrival, body) of every message from index `start` on that is telemetry."""
        with self._cond:
            return [(t, b) for t, (topic, b, _) in zip(self.arrivals[start:],
                                                       self.messages[start:], strict=True)
                    if topic.endswith("/telemetry") and isinstance(b, dict)]

    def count(self) -> int:
        with self._cond:
            return len(self.messages)
