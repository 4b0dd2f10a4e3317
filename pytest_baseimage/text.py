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


_CUT_MARK = re.compile(r"… \[(\d+) more characters cut\]$")


def clip(text: str, limit: int = MAX_OBSERVED_CHARS) -> str:
    """Cut untrusted text to at most `limit` characters, saying how much was cut.

    Idempotent, and a second cut adds to the count of the first: reports pass values through this again
    after a round trip (to_dict/from_dict), and must still say how much of the original was lost.
    """
    if len(text) <= limit:
        return text
    body, earlier = text, 0
    mark = _CUT_MARK.search(text)
    if mark:
        body, earlier = text[: mark.start()], int(mark.group(1))
    suffix = f"… [{earlier + len(body)} more characters cut]"  # the longest it can be: an upper bound
    keep = max(limit - len(suffix), 0)
    return f"{body[:keep]}… [{earlier + len(body) - keep} more characters cut]"


def untrusted(text: str, limit: int = MAX_OBSERVED_CHARS) -> str:
    """Inert and bounded: what every observed value goes through before any terminal, file or page."""
    return clip(strip_ansi(text), limit)


# What a line break or any other control character becomes on one line of a terminal, a CI log or a
# JUnit message: visible, and unable to start a line of its own (a forged "COMPATIBLE" line) or to
# return the cursor over one (a forged "python pass").
_LINE_BREAKS = {"\r": "\\r", "\n": "\\n"}
_ANY_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """Observed text made safe for one line: terminal escapes gone, CR/LF and other controls shown escaped."""
    return escaped(_ANSI.sub("", str(text)))


def escaped(text: str) -> str:
    """Every control character shown as an escape (ESC as \\x1b): for echoing what a user typed."""
    return _ANY_CONTROL.sub(_escape, str(text))


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _LINE_BREAKS.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def inert_lines(text: str) -> str:
    """Observed multi-line text (a log) made safe: its own lines stay, but no CR can rewrite one."""
    return "\n".join(one_line(line) for line in str(text).split("\n"))


def cut_line(text: str, limit: int) -> str:
    """Shorten one line for a terminal: cut at word boundaries with "…", keeping the start and the end.

    The end of a message often carries its cause ("…; compiled in: CUDAExecutionProvider"): the part after
    the last ": " or "; " is kept whole when it fits in half the room, else the last third's whole words.
    """
    text = text.strip()
    if len(text) <= limit:
        return text
    room = max(limit - 3, 2)  # " … " between the two parts
    tail = _cause(text, room // 2) or _last_words(text, room // 3)
    head_room = room - len(tail)
    head = text[: head_room + 1]  # one more: a space there means the last word is whole
    head = head[: head.rindex(" ")] if " " in head[head_room // 2 :] else head[:head_room]
    return f"{head.rstrip()} … {tail.lstrip()}"


def _cause(text: str, room: int) -> str:
    """What follows the last ": " or "; " of a message, if it fits in `room`."""
    start = max(text.rfind(": "), text.rfind("; "))
    tail = text[start + 2 :] if start > 0 else ""
    return tail if 0 < len(tail) <= room else ""


def _last_words(text: str, room: int) -> str:
    start = len(text) - room
    tail = text[start:]
    if text[start - 1] != " " and " " in tail[:-1]:
        tail = tail[tail.index(" ") + 1 :]
    return tail
