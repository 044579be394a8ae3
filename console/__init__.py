"""bgconsole: the operator console for blue-green deployments."""

__version__ = "0.1.0"
