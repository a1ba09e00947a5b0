"""The uplink: the platform contract (payloads, topics), the MQTT publisher and the forwarder.
"""
