"""city-edge-agent: polls city sensors, queues every reading durably in SQLite, forwards to MQTT."""

__version__ = "0.1.0"
