"""uvloop for ``bgconsole serve`` when it is installed (``pip install 'bgconsole[fast]'``).

The proxy runs on any asyncio loop; uvloop's makes its per-request work markedly cheaper
(see bench/proxy_bench.py). Without uvloop nothing changes.
"""

from __future__ import annotations

import asyncio


def install() -> bool:
    """Make the loops ``asyncio.run`` creates uvloop's; False when it is not installed."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def active() -> str:
    """The running loop's kind, for logs: ``uvloop`` or ``asyncio``."""
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
