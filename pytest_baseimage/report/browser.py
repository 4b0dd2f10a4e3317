"""Render a report in a real headless Chromium: its DOM as the browser parsed it, or a PNG screenshot.

Used by the tests (the report must read right in a browser, not only in a parser) and by
`scripts/report-screenshot` (the README's picture). Every flag that could reach the network is off.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class BrowserError(RuntimeError):
    """Chromium is missing or failed; the message is one line plus its stderr tail."""


def find_chromium() -> str | None:
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


def run_chromium(*args: str, timeout: float = 60) -> str:
    """Run headless Chromium with a fresh profile directory; returns its stdout."""
    binary = find_chromium()
    if binary is None:
        raise BrowserError("no chromium on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="baseimage-chromium-") as profile:
        done = subprocess.run(
            [binary, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True, timeout=timeout
        )
    if done.returncode != 0:
        raise BrowserError(f"chromium exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def dump_dom(html: Path) -> str:
    """The DOM after Chromium parsed the page: what a reader's browser really builds."""
    return run_chromium("--dump-dom", Path(html).resolve().as_uri())


def screenshot(html: Path, png: Path, width: int = 1280, height: int = 1600) -> Path:
    png = Path(png).resolve()
    run_chromium(f"--screenshot={png}", f"--window-size={width},{height}", Path(html).resolve().as_uri())
    if not png.is_file():
        raise BrowserError(f"chromium wrote no screenshot at {png}")
    return png
