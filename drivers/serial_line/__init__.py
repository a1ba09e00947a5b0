"""The `serial_line` driver for text sensors, and its pure protocol logic.
"""
