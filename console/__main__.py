"""Run bgconsole as ``python -m console``."""

from console.cli import main

main()
