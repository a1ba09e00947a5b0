"""Polling: the scheduler, each device's runner, the reporting rules and the recent values.
"""
