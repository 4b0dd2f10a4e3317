"""Hygiene for untrusted text: everything observed in an image may be hostile (escape codes) or huge."""

from __future__ import annotations

import re
from collections.abc import Sequence

# Values observed in an image are untrusted: they are cut to this length before they reach any report.
MAX_OBSERVED_CHARS = 2000

# Terminal escape sequences: CSI (colours, cursor moves), OSC (titles, hyperlinks, clipboard writes),
# DCS/SOS/PM/APC strings, 8-bit CSI, and the remaining two-byte ESC sequences. An unterminated string
# sequence runs to the end of the text, as a terminal would swallow it.
_ANSI = re.compile(
    r"""
    \x1b\[[0-?]*[ -/]*[@-~]                   # CSI
    | \x9b[0-?]*[ -/]*[@-~]                   # 8-bit CSI
    | \x1b\][^\x07\x1b]*(?:\x07|\x1b\\|$)     # OSC, ended by BEL or ST
    | \x1b[PX^_][^\x1b]*(?:\x1b\\|$)          # DCS, SOS, PM, APC
    | \x1b[ -/]*[0-~]                         # other ESC sequences (charset, keypad, ...)
    """,
    re.VERBOSE,
)

# Characters that XML 1.0 forbids, and C0/C1 controls a browser or terminal would misrender.
# Tab, newline and carriage return stay.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def strip_ansi(text: str) -> str:
    """Remove terminal escapes and control characters: text must be inert in HTML, XML and terminals."""
    return _CONTROL.sub("", _ANSI.sub("", text))


REDACTED = "***"


def redact(text: str, secrets: Sequence[str] = ()) -> str:
    """Replace every occurrence of each secret with ``***``; longest first, so overlapping secrets all go."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def clip(text: str, limit: int = MAX_OBSERVED_CHARS) -> str:
    """Cut untrusted text to a bounded length, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters cut]"


def untrusted(text: str, limit: int = MAX_OBSERVED_CHARS) -> str:
    """Inert and bounded: what every observed value goes through before any terminal, file or page."""
    return clip(strip_ansi(text), limit)
