"""Drivers: each turns one kind of device's bytes into readings (and values into bytes).

`drivers.base` is the Driver protocol, `drivers.registry` the YAML `driver:` name -> class map.
Drivers import only agent.core, agent.transport and their own package.
"""
