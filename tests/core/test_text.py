"""printable(): untrusted text can never drive the terminal or forge a line."""

from __future__ import annotations

import pytest

from console.core.text import printable


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain reason", "plain reason"),
        ("héllo ✓ 日本", "héllo ✓ 日本"),
        ("a\nb", "a\\nb"),
        ("a\r\nb", "a\\r\\nb"),
        ("tab\there", "tab\\there"),
        ("\x1b[2J\x1b[1;1Hfake", "\\x1b[2J\\x1b[1;1Hfake"),
        ("bell\x07", "bell\\x07"),
        ("nul\x00", "nul\\x00"),
        ("del\x7f", "del\\x7f"),
        ("csi\x9b31m", "csi\\x9b31m"),
        ("nel\x85", "nel\\x85"),
        ("rtl \u202eevil\u202c", "rtl \\u202eevil\\u202c"),
        ("isolate \u2066x\u2069", "isolate \\u2066x\\u2069"),
        ("mark \u200f", "mark \\u200f"),
        ("line\u2028sep", "line\\u2028sep"),
        ("bad byte \udcff", "bad byte \\udcff"),
        ("back\\slash", "back\\slash"),
    ],
)
def test_single_line_fields_escape_every_control(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_multiline_keeps_newlines_and_tabs_only() -> None:
    assert printable("one\n\ttwo\x1b[31m\r", multiline=True) == "one\n\ttwo\\x1b[31m\\r"


def test_nothing_unprintable_survives() -> None:
    every = "".join(chr(c) for c in range(0x00, 0x250)) + "\u202e\u2066\u2028\u2029"
    shown = printable(every)
    # No-break space and soft hyphen are not "printable" to Python but cannot move text.
    left = [c for c in shown if not c.isprintable() and c not in "\xa0\xad"]
    assert left == []


def test_agent_logfmt_lines_escape_controls() -> None:
    # `bgconsole serve` writes these to stderr, often a terminal: a reason with ESC or CR
    # must not rewrite the operator's screen or split the line.
    from console.core.agent_log import AgentLog

    line = AgentLog("logfmt").format("info", "switch", {"reason": "a\rb\x1b[2J"}, 0.0)
    assert line.endswith('reason="a\\rb\\x1b[2J"')
    plain = AgentLog("logfmt").format("info", "switch", {"reason": "tab\tand\nnewline"}, 0.0)
    assert plain.endswith('reason="tab\\tand\\nnewline"')
