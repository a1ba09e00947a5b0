"""The centre: small frozen types, errors, units, time, logging and the config base.

Imports nothing else of ours.
"""
