"""Who is acting: the OS user and host recorded with every operator action."""

from __future__ import annotations

import getpass
import os
import socket


def current_actor() -> str:
    """``user@host`` of the person running this process.

    Under sudo the invoking user is named too (``alice (as root)@jump1``), so the audit
    trail says who, not just which account.
    """
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    sudo_user = os.environ.get("SUDO_USER")
    if sudo_user and sudo_user != user:
        user = f"{sudo_user} (as {user})"
    return f"{user}@{socket.gethostname()}"


def agent_actor() -> str:
    """The actor name of an agent process: ``agent:<host>:<pid>``."""
    return f"agent:{socket.gethostname()}:{os.getpid()}"
