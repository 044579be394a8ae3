"""Data migration between the colours: rows, snapshot, mirror and Redis keys strategies.

``MigrationRunner`` (runner.py) is the entry point: it takes the control-plane lock,
records events, runs one strategy and verifies it. tables.py holds row identity and the
plan; rows.py, snapshot.py, mirror.py / capture.py and redis_keys.py the strategies;
hostside.py the script run on the hosts (remote.py drives it); hostrun.py a run's lock and
the sweep of dead runs on each host.
"""
