"""Open logs, Escape, q on the demo sandbox: the process ends without asyncio noise.

Reported: 4-10 blocks of ``Exception ignored in BaseSubprocessTransport.__del__ ...
Event loop is closed`` after quitting. The sandbox's SSH host killed a log command's
wrapper before the wrapper could stop its ``setsid`` tail, whose open pipes were then
closed by the garbage collector after the loop. Run in a child process, as the console
is, so that what it prints at exit is what is checked.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from console.app import ConsoleApp
    from console.core.config import load_config
    from console.core.services import Services
    from console.demo.sandbox import Sandbox

    async def main() -> None:
        async with Sandbox(Path(sys.argv[1]), traffic=True) as sandbox:
            services = Services.build(load_config(sandbox.config_path))
            app = ConsoleApp(services, close_services=False)
            try:
                async with app.run_test(size=(120, 35)) as pilot:
                    await pilot.pause(1.0)
                    for _ in range(2):
                        await pilot.press("l")
                        await pilot.pause(2.0)
                        await pilot.press("escape")
                        await pilot.pause(0.3)
                    await pilot.press("q")
                    await pilot.pause(0.3)
            finally:
                await services.aclose()
        print("done", file=sys.stderr)

    asyncio.run(main())
    """
)


def test_logs_escape_quit_leaves_no_event_loop_noise(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "sandbox")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "done" in done.stderr
    assert "Exception ignored" not in done.stderr, done.stderr[-3000:]
    assert "Event loop is closed" not in done.stderr
