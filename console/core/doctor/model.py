"""What a doctor check finds: one line per check, its status and the fix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "warn", "fail"]

_LABEL = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}


@dataclass(frozen=True, slots=True)
class Check:
    """One finding about the setup.

    ``fail``: something bgconsole needs does not work (a switch, deploy or failover would
    go wrong); ``warn``: it works, but a default or a choice is a trap; ``ok``: checked.
    """

    area: str
    """What was checked: ``control``, ``health``, ``version``, ``ssh``, ``steps``, ..."""
    subject: str
    """Where: ``control plane``, ``blue/app1``, ``flag uploads``."""
    status: Status
    detail: str
    fix: str = ""
    """What to do about a warning or failure (empty when ok)."""

    def line(self) -> str:
        """``FAIL  ssh      blue/app1: host key not in ... -> fix: ssh-keyscan ...``."""
        text = f"{_LABEL[self.status]}  {self.area:<8} {self.subject}: {self.detail}"
        return f"{text} -> fix: {self.fix}" if self.fix else text

    def as_dict(self) -> dict[str, str]:
        """Plain data for ``--json``."""
        return {
            "area": self.area,
            "subject": self.subject,
            "status": self.status,
            "detail": self.detail,
            "fix": self.fix,
        }


def ok(area: str, subject: str, detail: str) -> Check:
    """A passed check."""
    return Check(area, subject, "ok", detail)


def warn(area: str, subject: str, detail: str, fix: str) -> Check:
    """A working setup with a trap in it."""
    return Check(area, subject, "warn", detail, fix)


def fail(area: str, subject: str, detail: str, fix: str) -> Check:
    """Something bgconsole needs that does not work."""
    return Check(area, subject, "fail", detail, fix)


@dataclass(frozen=True, slots=True)
class Report:
    """Every check of one doctor run, in a stable order."""

    checks: tuple[Check, ...]
    duration: float

    def count(self, status: Status) -> int:
        """How many checks ended with ``status``."""
        return sum(1 for c in self.checks if c.status == status)

    def exit_code(self, *, strict: bool = False) -> int:
        """0 when nothing failed (and, with ``strict``, nothing warned); else 1."""
        bad: Sequence[Status] = ("fail", "warn") if strict else ("fail",)
        return 1 if any(c.status in bad for c in self.checks) else 0

    def summary(self) -> str:
        """``12 ok, 2 warnings, 1 failure (2.3 s)``."""
        fails, warns = self.count("fail"), self.count("warn")
        return (
            f"{self.count('ok')} ok, {warns} warning{'s' if warns != 1 else ''}, "
            f"{fails} failure{'s' if fails != 1 else ''} ({self.duration:.1f} s)"
        )
