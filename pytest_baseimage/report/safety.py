"""Text hygiene for untrusted values: everything observed in an image may be hostile or huge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pytest_baseimage.text import clip, redact, strip_ansi

# How much of a log a report keeps: the end is where the error is.
LOG_MAX_LINES = 200
LOG_MAX_CHARS = 20_000


def clean(text: Any, secrets: Sequence[str] = ()) -> str:
    """Make one untrusted value safe to show: no escapes, no secrets (redacted before any cut)."""
    return redact(strip_ansi(str(text)), secrets)


def clean_tree(value: Any, secrets: Sequence[str] = ()) -> Any:
    """Apply :func:`clean` to every string in a JSON-like tree, keys included; other leaves are kept."""
    if isinstance(value, str):
        return clean(value, secrets)
    if isinstance(value, dict):
        return {clean_tree(k, secrets): clean_tree(v, secrets) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_tree(v, secrets) for v in value]
    return value


def tail(text: str, max_lines: int = LOG_MAX_LINES, max_chars: int = LOG_MAX_CHARS) -> str:
    """Keep the end of a log, saying how much was cut: the error is usually in the last lines."""
    lines = text.splitlines()
    notes = []
    if len(lines) > max_lines:
        notes.append(f"{len(lines) - max_lines} earlier lines cut")
        lines = lines[-max_lines:]
    kept = "\n".join(lines)
    if len(kept) > max_chars:
        notes.append(f"{len(kept) - max_chars} earlier characters cut")
        kept = kept[-max_chars:]
    return f"[… {', '.join(notes)}]\n{kept}" if notes else kept


def short(text: Any, limit: int) -> str:
    """Clip a value for display (the result model already clips, but values may be set after construction)."""
    return clip(str(text), limit)
