"""``bgconsole doctor``: a configuration checked against the real setup, one check a line.

One concept per module: ``model`` (a check and the report), ``placeholders`` and ``steps``
(static), ``control`` (control plane and router), ``health`` (health URLs, latency,
version), ``ssh`` (login, workdir, log files), ``flags`` (flag keys per colour), ``data``
(SQLite files and their row identity), and ``runner`` (all of them at once).
"""

from console.core.doctor.model import Check, Report
from console.core.doctor.runner import diagnose

__all__ = ["Check", "Report", "diagnose"]
