"""`edge-agent demo`: the whole job on one machine, with nothing to configure.

It starts a simulated water-treatment PLC (a real Modbus TCP server on loopback whose values
change plausibly), a private Mosquitto on a free loopback port, and the agent with its queue in
a temporary directory; a subscriber prints every telemetry message as it arrives. Ctrl-C (or
`--duration`) stops everything in reverse order and removes the temporary directory.
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from agent.config.load import AgentConfig
from agent.core import log
from agent.service.runtime import EXIT_FAILURE, EXIT_OK, Agent
from agent.sim.broker import LocalBroker, free_port
from agent.sim.modbus import ModbusSimulator, WaterPlant

GATEWAY = "demo-gw-001"


def demo_config(workdir: Path, broker_port: int, plc_port: int) -> AgentConfig:
    """The agent config the demo runs: one PLC polled every second."""
    return AgentConfig.model_validate({
        "gateway": {"id": GATEWAY, "site": "demo", "clock": "trusted"},  # a PC keeps time
        "mqtt": {"host": "127.0.0.1", "port": broker_port, "topic_prefix": "city", "qos": 1},
        "queue": {"path": str(workdir / "queue.db")},
        "log": {"level": "info", "format": "console"},
        "status_page": {"enabled": True},  # http://127.0.0.1:8088/ (logged; skipped if taken)
        "devices": [{
            "name": "intake-plc", "driver": "modbus_tcp", "host": "127.0.0.1",
            "port": plc_port, "unit": 1, "interval": "1s", "points": WaterPlant.POINTS,
        }],
    })


def _format(message: dict[str, Any]) -> str:
    readings = message.get("readings", [])
    if not readings:
        return ""
    seqs = f"seq {readings[0]['seq']}-{readings[-1]['seq']}"
    when = time.strftime("%H:%M:%S", time.gmtime(readings[0]["ts"] / 1000))
    values = "  ".join(
        f"{r['metric']}={json.dumps(r['value'])}{' ' + r['unit'] if r.get('unit') else ''}"
        if r["quality"] == "good" else f"{r['metric']}=({r['quality']})"
        for r in readings
    )
    return f"{when}Z  {message['device']}  {seqs}  {values}"


class Watcher:
    """Subscribes to the gateway's topics and prints what the platform would receive."""

    def __init__(self, port: int, out: TextIO) -> None:
        self.out = out
        self.messages = 0
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="demo-watcher")
        self.client.on_connect = lambda c, *_: c.subscribe(f"city/{GATEWAY}/#", qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        body = json.loads(msg.payload)
        if msg.topic.endswith("/status"):
            line = f"[broker] {msg.topic}: {body.get('state')}"
        elif msg.topic.endswith("/health"):
            devices = body.get("devices", {})
            online = sum(d.get("state") == "online" for d in devices.values())
            line = (f"[broker] {msg.topic}: {online}/{len(devices)} devices online, "
                    f"{body['queue']['depth']} queued, {body['published']} published")
        else:
            self.messages += 1
            line = f"[broker] {_format(body)}"
        print(line, file=self.out, flush=True)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def run_demo(duration: float | None = None, out: TextIO = sys.stdout) -> int:
    """Run until Ctrl-C, SIGTERM, or `duration` seconds; returns the exit code."""
    log.setup("info", "console")
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    with tempfile.TemporaryDirectory(prefix="edge-agent-demo-") as tmp:
        workdir = Path(tmp)
        try:
            broker = LocalBroker(workdir / "broker", own_session=True)
            broker.start()
        except RuntimeError as exc:
            print(f"edge-agent demo: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        sim = ModbusSimulator(port=free_port())
        plant = WaterPlant(sim, unit=1, speed=30)  # 30x: the tank and pump move visibly
        agent: Agent | None = None
        watcher: Watcher | None = None
        try:
            sim.start()
            plant.run(period=0.5)
            watcher = Watcher(broker.port, out)
            agent = Agent(demo_config(workdir, broker.port, sim.port))
            print(f"demo: PLC on 127.0.0.1:{sim.port}, broker on 127.0.0.1:{broker.port}, "
                  f"queue {workdir / 'queue.db'}; Ctrl-C stops", file=out, flush=True)
            agent.start()
            stop.wait(duration)
        finally:
            if agent is not None:
                agent.stop()
            if watcher is not None:
                watcher.stop()
            plant.stop()
            sim.stop()
            broker.stop()
        print(f"demo: stopped; {watcher.messages if watcher else 0} telemetry messages received",
              file=out, flush=True)
    return EXIT_OK
