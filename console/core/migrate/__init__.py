"""Data migration between the colours: rows, snapshot, mirror and Redis keys strategies.

``MigrationRunner`` (runner.py) is the entry point: it takes the control-plane lock,
records events, runs one strategy and verifies it.
"""
