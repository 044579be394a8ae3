"""Untrusted text made safe to print on a terminal.

Reasons, refs, actors, host errors, versions and log lines come from other people and
other machines. Printed raw, an ESC sequence in a ``--reason`` can move the cursor,
recolour or clear the screen, and a newline can forge a whole fake event line ("switch
... verified"). Everything that reaches a terminal (CLI text output and the console)
goes through :func:`printable`; JSON output does not need it (JSON escapes itself).
"""

from __future__ import annotations

import unicodedata

# Characters that reorder or hide text without being control characters: bidi
# overrides and isolates (the "Trojan Source" trick), and the Unicode line and
# paragraph separators, which some terminals and widgets treat as line breaks.
_INVISIBLE = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u2028\u2029"
)
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    short = _SHORT.get(char)
    if short is not None:
        return short
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def _unsafe(char: str, keep: str) -> bool:
    if char in keep:
        return False
    code = ord(char)
    # C0 controls, DEL, C1 controls (0x9b is a one-byte CSI on some terminals).
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return True
    if code < 0x2028:
        # Fast path for ordinary text; only the bidi marks below 0x2028 remain.
        return char in _INVISIBLE
    # Lone surrogates (from undecodable bytes) cannot even be encoded for output.
    return char in _INVISIBLE or unicodedata.category(char) == "Cs"


def printable(text: str, *, multiline: bool = False) -> str:
    """``text`` with every control character shown as a visible escape (``\\x1b``, ``\\n``).

    Single-line fields (the default: a reason, a ref, an actor) escape newlines and tabs
    too, so one field can never become two lines. ``multiline=True`` keeps ``\\n`` and
    ``\\t`` for text that is legitimately several lines (command output); every other
    control character is still escaped. Backslashes are left alone: the aim is that the
    terminal shows what is there, not a reversible encoding (``--json`` is exact).
    """
    keep = "\n\t" if multiline else ""
    if text.isascii() and text.isprintable():
        return text  # the common case, with no per-character work
    return "".join(_escape(c) if _unsafe(c, keep) else c for c in text)
