"""Polling: the scheduler and its pure planner, each device's runner, the reporting rules and the
recent values.
"""
