"""The running service: wiring and signals, reload, health, the state file, systemd, metrics and
the status page.
"""
