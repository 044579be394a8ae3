"""The go/no-go shown before a switch: both colours side by side, and what could bite."""

from __future__ import annotations

from typing import Literal

from textual.content import Content

from console.core.data_check import DataCheck
from console.core.flags import FlagTable
from console.core.models import Colour, Verdict
from console.core.status import StatusReport
from console.core.text import printable
from console.widgets.formatting import VERDICT_VARIABLE
from console.widgets.host_table import version_seen

COLUMN = 26


def _versions(report: StatusReport, colour: Colour) -> str:
    env = report.health.envs.get(colour)
    if env is None:
        return "not probed"
    shown = []
    for host in env.hosts:
        seen = version_seen(host)
        if seen.version is None:
            shown.append("unknown")
        else:
            shown.append(printable(seen.version) if seen.current else f"was {seen.version}")
    return ", ".join(sorted(set(shown))) or "-"


def go_no_go(
    report: StatusReport,
    flags: FlagTable | None,
    to: Colour,
    data: DataCheck | Literal["checking"] | None = None,
) -> Content:
    """``health / version / flags that differ / in progress / failover / data`` for a flip
    from the live colour to ``to``: the checks an operator would otherwise make by hand.

    ``data``: the rows check (:func:`console.core.data_check.check_data`), ``"checking"``
    while it runs, None when it was not started."""
    before = to.other
    label = "$text-muted"
    lines: list[Content] = [
        Content.assemble(
            " " * 12,
            (f"{before.value.upper()} (live now)".ljust(COLUMN), f"bold $env-{before.value}"),
            (f"{to.value.upper()} (target)", f"bold $env-{to.value}"),
        )
    ]

    def row(name: str, left: str | Content, right: str | Content) -> None:
        left = left if isinstance(left, Content) else Content(left)
        right = right if isinstance(right, Content) else Content(right)
        cell = left.truncate(COLUMN - 1, ellipsis=True, pad=True)
        lines.append(Content.assemble((f"{name:<12}", label), cell, " ", right))

    def health(colour: Colour) -> Content:
        env = report.health.envs.get(colour)
        if env is None:
            return Content.styled("not probed", "$text-muted")
        up = len(env.healthy_hosts)
        return Content.assemble(
            (env.verdict.value, f"bold {VERDICT_VARIABLE[env.verdict]}"),
            f" {up}/{len(env.hosts)} up",
        )

    row("health", health(before), health(to))
    row("version", _versions(report, before), _versions(report, to))
    if flags is None:
        lines.append(Content.assemble(("flags       ", label), "not read yet"))
    else:
        differ = [r for r in flags.rows if r.value(before).state != r.value(to).state]
        if not differ:
            lines.append(Content.assemble(("flags       ", label), "the same on both"))
        for flag in differ:
            row(
                f"flag {printable(flag.name)}"[:11],
                printable(str(flag.value(before).state)),
                Content.styled(printable(str(flag.value(to).state)), "bold $warning"),
            )
    if report.locks:
        for lock in report.locks:
            lines.append(
                Content.assemble(
                    ("in progress ", label),
                    (f"{printable(lock.purpose)} by {printable(lock.holder)}", "bold $warning"),
                )
            )
    else:
        lines.append(Content.assemble(("in progress ", label), "no deploy or migration"))
    failover = report.failover
    state = (
        Content.styled("armed and active", "$status-ok")
        if failover.active
        else Content.styled(f"NOT active: {printable(failover.why_not or '?')}", "bold $warning")
    )
    lines.append(Content.assemble(("failover    ", label), state))
    lines += _data_lines(report, before, to, data)
    target = report.health.envs.get(to)
    if target is not None and target.verdict is not Verdict.HEALTHY:
        warning = f"{to} is {target.verdict.value}: the switch probes it first and may refuse"
        lines.append(Content.styled(warning, "bold $status-down"))
    return Content("\n").join(lines)


def _data_lines(
    report: StatusReport, before: Colour, to: Colour, data: DataCheck | Literal["checking"] | None
) -> list[Content]:
    """Rows written on the live colour and not on the target, and the mirror's lag."""
    label = ("data        ", "$text-muted")
    lines: list[Content] = []
    if data == "checking":
        lines.append(
            Content.assemble(
                label, ("checking…", "$text-muted"), f" (dry run: rows on {before} missing on {to})"
            )
        )
    elif data is None or not data.checked:
        why = printable(data.why) if data is not None else f"rows on {before} may be missing"
        lines.append(
            Content.assemble(label, ("not checked", "bold $warning"), f": {why} (m: dry run)")
        )
    elif data.clean:
        lines.append(
            Content.assemble(
                label,
                (f"every row on {before} is on {to}", "$status-ok"),
                (f" ({data.tables} table(s), {data.seconds:.1f} s)", "$text-muted"),
            )
        )
    else:
        parts: list[str | tuple[str, str]] = [label]
        if data.missing:
            tables = ", ".join(f"{printable(_table(t))} {n}" for t, n in data.missing[:3])
            more = f" +{len(data.missing) - 3} tables" if len(data.missing) > 3 else ""
            parts.append(
                (f"{data.rows_missing} row(s) on {before} NOT on {to}", "bold $status-down")
            )
            parts.append(f": {tables}{more}")
        if data.differ:
            parts.append((f"{'; ' if data.missing else ''}{data.differ} differ", "bold $warning"))
        parts.append(("  (m migrates them)", "$text-muted"))
        lines.append(Content.assemble(*parts))
    if report.mirror:
        style = "bold $warning" if report.mirror_behind else "$text-muted"
        lines.append(
            Content.assemble(("mirror      ", "$text-muted"), (printable(report.mirror), style))
        )
    return lines


def _table(item: str) -> str:
    """``uploads`` from ``green:/srv/app/data/app.db uploads``: the host and path are in
    the dry run (m); the dialog has room for the table."""
    return item.rsplit(" ", 1)[-1]
