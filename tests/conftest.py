"""Fixtures that start real peers: a private Mosquitto on a free loopback port, pymodbus servers,
and a subscriber that records what the platform would receive. Peers are stopped by the pid or
handle that started them; nothing here touches the system broker on port 1883."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from agent.config.load import load_config
from agent.service.runtime import Agent
from agent.sim.broker import LocalBroker, find_mosquitto, free_port
from agent.sim.modbus import ModbusSimulator
from tests.peers.disk import mount_ext4, unmount_ext4
from tests.support import Collector, RunAgent, modbus_device, write_config

# Hypothesis's per-example deadline is a timing assertion: on a loaded 2-core CI machine it
# turns slowness into failures. Examples are bounded by max_examples instead.
settings.register_profile("edge-agent", deadline=None)
settings.load_profile("edge-agent")


@pytest.fixture(scope="session")
def mosquitto_bin() -> str:
    try:
        return find_mosquitto()
    except RuntimeError as exc:
        pytest.fail(f"{exc} (or run: bash .ci/run, which installs it)")


@pytest.fixture
def broker(tmp_path: Path, mosquitto_bin: str) -> Iterator[LocalBroker]:
    b = LocalBroker(tmp_path / "broker", persistent=True)
    b.start()
    yield b
    b.stop()


@pytest.fixture
def collector(broker: LocalBroker) -> Iterator[Collector]:
    c = Collector(broker.port)
    yield c
    c.stop()
    assert not c.invalid, f"messages that break the published schemas: {c.invalid[:3]}"


@pytest.fixture
def plc() -> Iterator[ModbusSimulator]:
    sim = ModbusSimulator(port=free_port(), units=(1, 2))
    sim.start()
    yield sim
    sim.stop()


@pytest.fixture
def run_agent(tmp_path: Path, plc: ModbusSimulator) -> Iterator[RunAgent]:
    """Start in-process agents from a written config: run_agent(broker_port, devices=None,
    **mqtt_keys); the default device polls `plc` every 50 ms. Stopped at teardown."""
    agents: list[Agent] = []

    def start(broker_port: int, devices: list[dict[str, Any]] | None = None,
              **mqtt: Any) -> Agent:
        devices = devices or [modbus_device("plc", plc.port, interval="50ms")]
        cfg = write_config(tmp_path / "agent.yaml", broker_port=broker_port, devices=devices,
                           **mqtt)
        agent = Agent(load_config(cfg))
        agents.append(agent)
        agent.start()
        return agent

    yield start
    for a in agents:
        a.stop()


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[Path]:
    """A 32 MB ext4 on a loop device (errors=remount-ro), unmounted (and thawed) afterwards."""
    mnt = tmp_path / "disk"
    mount_ext4(tmp_path / "disk.img", mnt)
    try:
        yield mnt
    finally:
        unmount_ext4(mnt)
