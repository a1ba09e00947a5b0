"""The running service: wiring and signals, reload, the read-only view its readers get (health,
the status file, systemd, metrics and the status page).
"""
