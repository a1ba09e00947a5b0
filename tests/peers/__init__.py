"""The real peers the tests talk to, in one place. Each is started by the test (or a fixture in
tests/conftest.py) on loopback or a pty, and stopped by the handle or pid that started it.

- MQTT broker: a private Mosquitto on a free loopback port, `agent.sim.broker.LocalBroker`
  (shared with `edge-agent demo`, which ships it); fixture `broker`; never the system broker.
- Modbus TCP servers: real pymodbus servers, `agent.sim.modbus.ModbusSimulator` (the demo's
  plant too); fixture `plc`.
- Modbus RTU/ASCII on a serial line: `tests.peers.serial_modbus` (a virtual null-modem of two
  ptys with a pymodbus serial server on its far end).
- Text sensors on a serial line: `tests.peers.line_sensor` (a pty whose master the test drives).
- TLS: `tests.peers.pki`, a CA and certificates made per test with `cryptography`.
- A small disk: `tests.peers.disk` (a tmpfs of a given size; needs root).
- Faults between agent and broker: `tests.chaos.proxy` (a TCP proxy the chaos harness cuts).
"""
