"""The Modbus drivers: pure codec, framing and planning, and the TCP, RTU and ASCII drivers.
"""
