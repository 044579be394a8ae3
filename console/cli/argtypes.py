"""argparse ``type=`` functions: every number on the command line checked where it is parsed.

A bad value is then argparse's usage error (exit 2, one line naming the option) rather
than an OverflowError in the agent or a "control plane unavailable" from a Redis that
was asked for 10**23 events.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from console.core.config import parse_listen


def _shown(text: str) -> str:
    """The offending value, quoted and cut short (a 400-digit number is still one line)."""
    return repr(text if len(text) <= 24 else text[:20] + "...")


def count(minimum: int, maximum: int) -> Callable[[str], int]:
    """A whole number from ``minimum`` to ``maximum``."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            value = None
        if value is None or not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(
                f"expected a whole number from {minimum} to {maximum}, got {_shown(text)}"
            )
        return value

    parse.__name__ = "count"  # argparse names the type in some messages
    return parse


def seconds(
    minimum: float, maximum: float, *, above_minimum: bool = False
) -> Callable[[str], float]:
    """A finite number of seconds in range (``above_minimum``: strictly greater)."""
    low = f"more than {minimum:g}" if above_minimum else f"from {minimum:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number of seconds, got {_shown(text)}"
            ) from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {_shown(text)}")
        too_low = value <= minimum if above_minimum else value < minimum
        if too_low or value > maximum:
            raise argparse.ArgumentTypeError(
                f"expected seconds {low} to {maximum:g}, got {_shown(text)}"
            )
        return value

    parse.__name__ = "seconds"
    return parse


def listen_address(text: str) -> str:
    """``HOST:PORT`` to listen on (port 0 picks a free one); returned unchanged."""
    try:
        parse_listen(text, any_port=True)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text
