"""The lines the core owns and lends to drivers: serial and TCP ports, one owner per line, and
the listener for devices that talk on their own.

Imports only agent.core.
"""
