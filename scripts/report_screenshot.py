"""Make the README's picture of the HTML report from a real fixture run: `python scripts/report_screenshot.py`.

Certifies four fixture images (one compatible, three broken in different ways), writes the report, and has
headless Chromium render it to docs/report.png. Needs the fixture images (`python fixtures/build.py`).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pytest_baseimage.report.browser import screenshot

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ("good", "no-conda", "wrong-python", "no-shell")


def main() -> int:
    out = ROOT / "out" / "screenshot"
    out.mkdir(parents=True, exist_ok=True)
    html = out / "report.html"
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--base-image-profile={ROOT / 'fixtures' / 'profiles' / 'fixture.toml'}",
        *(f"--base-image=pytest-baseimage-fixture/{name}:latest" for name in IMAGES),
        f"--compat-html={html}",
        f"--compat-json={out / 'report.json'}",
    ]
    done = subprocess.run(command, cwd=out, capture_output=True, text=True)
    if done.returncode not in (0, 1) or not html.is_file():
        sys.stderr.write(f"report-screenshot: the run failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n")
        return 1
    png = screenshot(html, ROOT / "docs" / "report.png", width=1280, height=1500)
    print(f"wrote {png.relative_to(ROOT)} from {html}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
