"""The error hierarchy every core service raises; the UI and CLI catch only these."""

from __future__ import annotations


class ConsoleError(Exception):
    """Base of every error an operator can act on.

    The message is one line, written for the operator: what failed and, where there is
    one, the fix. The CLI prints it as-is and exits with ``exit_code``.
    """

    exit_code = 1


class ConfigError(ConsoleError):
    """The configuration is missing, unreadable or invalid; the message names the key path."""

    exit_code = 2


class UsageError(ConsoleError):
    """The command line asks for something that cannot be done as written."""

    exit_code = 2


class BackendError(ConsoleError):
    """A backend (Redis, a router, a host) answered, but with an error."""


class HostUnreachable(BackendError):
    """A host could not be reached within its timeout."""


class ControlPlaneUnavailable(BackendError):
    """The control-plane Redis is down, unreachable or timing out."""


class SwitchOutcomeUnknown(ControlPlaneUnavailable):
    """A switch was sent but the control plane stopped answering: it may have committed."""

    exit_code = 3


class ConflictError(ConsoleError):
    """Someone else changed the state first (epoch moved on, lock held)."""


class LockHeld(ConflictError):
    """A control-plane lock is held by someone else; the message names the holder."""


class HostKeyError(ConsoleError):
    """An SSH host key is unknown or does not match known_hosts."""


class RouterError(BackendError):
    """The router refused or failed a change, or reported an unexpected state."""


class VerificationFailed(ConsoleError):
    """A change was applied but the check afterwards did not confirm it."""


class LockLost(ConsoleError):
    """A lock we held expired or was taken while we worked; the work stopped at a safe point."""


class ReadOnly(ConsoleError):
    """A watch-only console refused a change to production."""
