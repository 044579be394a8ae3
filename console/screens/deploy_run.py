"""DeployRunScreen: runs one deploy and streams its steps and output into a log pane."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Static

from console.core.deploy import BatchProgress, DeployResult, StepStarted, live_deploy_preview
from console.core.errors import ConsoleError
from console.core.logs import LogLine
from console.core.services import Services
from console.core.ssh import OutputLine
from console.core.text import printable
from console.messages import OperationFinished
from console.screens.confirm import ConfirmScreen
from console.screens.deploy import DeployRequest
from console.widgets.event_strip import EVIDENCE_KINDS
from console.widgets.key_footer import KeyFooter
from console.widgets.log_pane import LogPane


def deploy_summary(result: DeployResult) -> str:
    """One line: ``deploy v2 → green: ok in 3.1 s, version v1 → v2; traffic: on blue ...``."""
    head = f"deploy {printable(result.ref or '(no ref)')} → {result.colour}"
    traffic = result.traffic()
    if result.outcome == "unknown":
        return f"{head}: outcome UNKNOWN: {result.failure() or 'see the output'}; {traffic}"
    if not result.ok:
        return f"{head}: FAILED: {result.failure() or 'see the output'}; {traffic}"
    version = result.version or "unknown"
    if result.previous_version and result.previous_version != result.version:
        version = f"{result.previous_version} → {version}"
    return f"{head}: ok in {result.duration:.1f} s, healthy, version {version}; {traffic}"


def host_range(hosts: tuple[str, ...]) -> str:
    """``g-06..g-10`` for a batch (consecutive in config order), ``g-01`` for one host."""
    if len(hosts) <= 2:
        return ", ".join(printable(h) for h in hosts)
    return f"{printable(hosts[0])}..{printable(hosts[-1])}"


def batch_text(batch: BatchProgress) -> str:
    """``batch 2/4: g-06..g-10 deploying`` / ``canary g-01 (batch 1/5): healthy after 0.4 s``."""
    what = (
        f"canary {printable(batch.hosts[0])} (batch 1/{batch.total})"
        if batch.canary
        else f"batch {batch.index}/{batch.total}: {host_range(batch.hosts)}"
    )
    if batch.state == "started":
        return f"{what} deploying"
    if batch.state == "healthy":
        return f"{what} {batch.detail}"
    return f"{what} FAILED: {printable(batch.detail)}; rollout stopped"


class BatchBoard:
    """The rollout line: the canary's result, the batch running now (or the one that
    stopped the rollout, naming the host), hosts done, and hosts left untouched."""

    def __init__(self, total_hosts: int) -> None:
        self.total_hosts = total_hosts
        self.canary: str | None = None
        """The canary's outcome, once known."""
        self.current: str | None = None
        self.started = 0
        self.healthy = 0
        self.stopped = False

    def update(self, batch: BatchProgress) -> None:
        text = batch_text(batch)
        if batch.canary and batch.state != "started":
            self.canary = text
        self.current = text
        if batch.state == "started":
            self.started += len(batch.hosts)
        elif batch.state == "healthy":
            self.healthy += len(batch.hosts)
        self.stopped = batch.state == "failed"

    def line(self) -> Content:
        parts: list[str | tuple[str, str]] = [("rollout: ", "bold")]
        if self.canary is not None and self.current != self.canary:
            ok = "FAILED" not in self.canary
            parts += [(self.canary, "$status-ok" if ok else "bold $status-down"), " · "]
        if self.current is not None:
            parts.append((self.current, "bold $status-down" if self.stopped else "bold"))
        parts.append(f" · {self.healthy}/{self.total_hosts} hosts done")
        if self.stopped:
            untouched = self.total_hosts - self.started
            parts.append((f" · {untouched} left untouched", "bold $status-down"))
        return Content.assemble(*parts)


class DeployRunScreen(Screen[None]):
    """Runs the deploy at once; Escape closes when done (and asks first while running)."""

    DEFAULT_CSS = """
    DeployRunScreen .deploy-title { height: 1; padding: 0 1; background: $panel; }
    DeployRunScreen .deploy-batches { height: auto; padding: 0 1; display: none; }
    DeployRunScreen .deploy-batches.-fleet { display: block; }
    DeployRunScreen .deploy-result { height: auto; padding: 0 1; }
    DeployRunScreen .deploy-result.-ok { color: $status-ok; text-style: bold; }
    DeployRunScreen .deploy-result.-failed { color: $status-down; text-style: bold; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        # q goes back too, asking first while the deploy runs (never quits the app).
        Binding("q", "app.back", "Back"),
    ]

    def __init__(
        self,
        services: Services,
        request: DeployRequest,
        *,
        live_ok: bool,
        on_finished: Callable[[OperationFinished], object] | None = None,
    ) -> None:
        """Args:
        services: the session's clients.
        request: the colour and ref to deploy.
        live_ok: the operator agreed to deploy to the live colour.
        on_finished: told the outcome when the deploy ends (the dashboard logs it).
        """
        super().__init__()
        self.services = services
        self.on_finished = on_finished
        self.request = request
        self.live_ok = live_ok
        self.result: DeployResult | None = None
        self.running = False
        hosts = len(services.config.env(request.colour).hosts)
        self.batches = BatchBoard(hosts)
        """The rollout so far (a fleet of more than one host goes in batches)."""

    def compose(self) -> ComposeResult:
        yield Static(self._title(), classes="deploy-title")
        fleet = "-fleet" if self.batches.total_hosts > 1 else ""
        yield Static("rollout: waiting for the lock…", classes=f"deploy-batches {fleet}")
        yield LogPane(self.services.config.console.log_lines)
        yield Static("running…", classes="deploy-result")
        yield KeyFooter()

    def _title(self) -> Content:
        """``deploy good → GREEN (live)``; after a failover, where traffic went instead."""
        colour = self.request.colour
        parts: list[str | tuple[str, str]] = [
            ("deploy ", "bold"),
            printable(self.request.ref or "(no ref)"),
            " → ",
            (colour.value.upper(), f"bold $env-{colour.value}"),
        ]
        how = []
        if self.request.method == "git":
            how.append("git push" + (f" from {self.request.repo}" if self.request.repo else ""))
        if self.request.parallel is not None and self.batches.total_hosts > 1:
            how.append(f"{self.request.parallel} per batch")
        if how:
            parts.append(f" ({printable(', '.join(how))})")
        moved = self.result.failover if self.result is not None else None
        if moved is not None:
            # It is not live any more: the agent took traffic away during the deploy.
            parts += [
                ("  FAILED OVER: traffic now on ", "bold $status-down"),
                (moved.colour.value.upper(), f"bold $env-{moved.colour.value}"),
                (f" (epoch {moved.epoch})", "bold $status-down"),
            ]
        elif self.live_ok:
            parts.append((" (live)", "bold $warning"))
        return Content.assemble(*parts)

    def on_mount(self) -> None:
        self.run_deploy()

    @work(exclusive=True, group="deploy", exit_on_error=False)
    async def run_deploy(self) -> None:
        """Run the deploy, writing each step and output line as it arrives."""
        pane = self.query_one(LogPane)
        colour = self.request.colour

        def on_line(line: OutputLine) -> None:
            pane.write(LogLine(colour, line.host, "deploy", line.text, line.at, stream=line.stream))

        def on_step(step: StepStarted) -> None:
            text = f"$ {step.command}   (step {step.index}/{step.total})"
            pane.write(LogLine(colour, step.host, "deploy", text, 0.0, marker=True))

        def on_batch(batch: BatchProgress) -> None:
            self.batches.update(batch)
            self.query_one(".deploy-batches", Static).update(self.batches.line())
            # The history stays in the log too, between the hosts' lines.
            pane.write(LogLine(colour, "bgconsole", "deploy", batch_text(batch), 0.0, marker=True))

        self.running = True
        if self.live_ok:
            # Before anything runs: what this does to traffic (the CLI says the same).
            armed: bool | None = None
            with contextlib.suppress(ConsoleError):
                armed = await self.services.armed()
            preview = live_deploy_preview(self.services.config, colour, armed)
            pane.write(LogLine(colour, "bgconsole", "deploy", preview, 0.0, marker=True))
        # Only what the form set: services of older callers take just the basics.
        options: dict[str, Any] = {}
        if self.batches.total_hosts > 1:
            options["on_batch"] = on_batch
        if self.request.method is not None:
            options["method"] = self.request.method
        if self.request.repo is not None:
            options["repo"] = self.request.repo
        if self.request.parallel is not None:
            options["parallel"] = self.request.parallel
        try:
            self.result = await self.services.deploy(
                colour,
                ref=self.request.ref,
                live_ok=self.live_ok,
                reason="from the console",
                on_line=on_line,
                on_step=on_step,
                **options,
            )
        except ConsoleError as e:
            self._finish(False, f"deploy to {colour} refused: {e}")
            return
        finally:
            self.running = False
        for warning in self.result.warnings:
            self.notify(warning, severity="warning")
        self.query_one(".deploy-title", Static).update(self._title())
        evidence = await self._failover_evidence(self.result)
        self._finish(self.result.ok, deploy_summary(self.result), evidence)

    async def _failover_evidence(self, result: DeployResult) -> list[str]:
        """The agent's evidence for a failover during the deploy (from its event)."""
        moved = result.failover
        if moved is None:
            return []
        lines: list[str] = []
        try:
            recent = await self.services.events(limit=50)
        except ConsoleError as e:
            return [*lines, f"evidence: not readable ({e})"]
        for event in reversed(recent):
            if event.kind in EVIDENCE_KINDS and f"(epoch {moved.epoch})" in event.summary:
                lines += [
                    f"evidence: {printable(k)}: {printable(v)}" for k, v in event.details.items()
                ]
                break
        return lines

    def _finish(self, ok: bool, summary: str, more: list[str] | None = None) -> None:
        result = self.query_one(".deploy-result", Static)
        # The lasting outcome: stays on this screen (the toast goes after 10 s).
        result.update(Content("\n".join([summary, *(more or ()), "(Escape closes)"])))
        result.set_class(ok, "-ok")
        result.set_class(not ok, "-failed")
        self.notify(summary, severity="information" if ok else "error", timeout=10)
        # The dashboard below logs it in its activity strip.
        if self.on_finished is not None:
            self.on_finished(OperationFinished("deploy", ok, summary))

    def action_close(self) -> None:
        """Leave; while the deploy runs, confirm that it should be cancelled."""
        if not self.running:
            self.dismiss()
            return
        self.confirm_cancel()

    @work(exclusive=True, group="close", exit_on_error=False)
    async def confirm_cancel(self) -> None:
        """Ask before cancelling a running deploy (the lock is released, an event recorded)."""
        if await self.app.push_screen_wait(
            ConfirmScreen(
                Content("Cancel the running deploy?"),
                Content("Hosts may be left mid-step; the deploy lock is released."),
                yes_label="Cancel deploy",
            )
        ):
            self.workers.cancel_group(self, "deploy")
            self.running = False
            self.dismiss()
