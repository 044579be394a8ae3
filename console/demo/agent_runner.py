"""The sandbox's agent: ``bgconsole serve``, its code loaded before the sandbox is ready.

Starting Python and importing the agent's code takes most of a second, longer than
Redis, the SSH servers and the apps take together. The sandbox starts this process
first; it imports the CLI, then waits for one line on stdin, which the sandbox sends once
the config is written, the control plane holds a live colour and both apps answer. So the
import overlaps the rest of the start, and the agent still never sees a half-built
sandbox (a first probe of an app still starting could fail it over at once).

    python -m console.demo.agent_runner serve -c DIR/bgconsole.toml
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    """Import, wait for the go line, then run ``bgconsole ARGV`` (exits with its status)."""
    import console.cli

    if not sys.stdin.readline():
        # End of file before the go line: the sandbox stopped before it was ready.
        return 0
    console.cli.main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
