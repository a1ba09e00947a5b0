"""Simulated peers for the demo and the tests (a Modbus plant, a private broker, the demo itself).

Never imported on the runtime path.
"""
