"""The HTML report in a real browser: headless Chromium parses it, and renders a screenshot of it."""

from __future__ import annotations

import os
import re
import struct
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pytest_baseimage.composition import STAGE_ORDER
from pytest_baseimage.report import Run, write_html
from pytest_baseimage.report.browser import dump_dom, find_chromium, screenshot
from pytest_baseimage.results import ImageInfo, ImageReport, StageResult, Status

HOSTILE = "<script>alert(1)</script>"

pytestmark = [
    pytest.mark.browser,
    # CI installs Debian's chromium: there a missing browser is a failure, elsewhere a skip with the reason.
    pytest.mark.skipif(not find_chromium() and not os.environ.get("CI"), reason="needs Debian's chromium"),
]


def _run() -> Run:
    """Two images: one compatible, one with a failure, an error, blocked and skipped stages, and hostile text."""
    good = ImageReport(
        name="mcr.microsoft.com/azureml/minimal-ubuntu22.04-py39-cpu-inference:latest",
        info=ImageInfo("mcr.microsoft.com/azureml/minimal-ubuntu22.04-py39-cpu-inference:latest", "sha256:" + "a" * 64),
        profile="azureml-current",
        results=[StageResult(s, Status.PASS, f"{s} ok", f"{s} found", duration_s=0.4) for s in STAGE_ORDER[:-1]]
        + [StageResult("gpu", Status.SKIPPED, reason="no GPU on this host")],
        facts={"os": "Ubuntu 22.04.4 LTS"},
    )
    mixed = ImageReport(
        name="python:3.11-slim",
        info=ImageInfo("python:3.11-slim", "sha256:" + "c" * 64, size_bytes=130_000_000),
        profile="azureml-current",
        results=[
            StageResult("os", Status.PASS, "debian >=11", "debian 12", duration_s=0.2),
            StageResult("conda", Status.FAIL, "conda on PATH", HOSTILE, remediation="install miniconda"),
            StageResult("python", Status.PASS, ">=3.8", "3.11.9"),
            StageResult("apt", Status.ERROR, reason="dpkg-query exited 2", details={"log": f"\x1b[31m{HOSTILE}"}),
            StageResult("azureml", Status.BLOCKED, reason="blocked by python"),
            StageResult("scoring", Status.BLOCKED, reason="blocked by azureml"),
            StageResult("gpu", Status.SKIPPED, reason="no GPU on this host"),
        ],
    )
    return Run([good, mixed], "0.1.0", "2024-06-02T10:00:00+00:00", "2024-06-02T10:03:12+00:00", "unix:///x", [])


@pytest.fixture
def report(tmp_path: Path) -> Path:
    path = tmp_path / "report.html"
    write_html(_run(), path)
    return path


class _Elements(HTMLParser):
    """Start tags with their attributes, and the text inside each element that has an id."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text_by_id: dict[str, str] = {}
        self._open: list[tuple[str, str]] = []  # (tag, id) of elements with an id, innermost last

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        self.tags.append((tag, values))
        if "id" in values:
            self._open.append((tag, values["id"]))
            self.text_by_id[values["id"]] = ""

    def handle_endtag(self, tag: str) -> None:
        if self._open and self._open[-1][0] == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        for _, element_id in self._open:
            self.text_by_id[element_id] += data


def test_chromium_parses_the_report(report: Path, tmp_path: Path) -> None:
    dom = dump_dom(report)
    elements = _Elements()
    elements.feed(dom)
    assert not [attrs for tag, attrs in elements.tags if tag == "script"]  # the hostile text stayed text
    assert HOSTILE in elements.text_by_id["img-1-conda"]
    assert "could not be checked" in " ".join(elements.text_by_id["run-verdict"].split())

    sections = [attrs for tag, attrs in elements.tags if tag == "section" and "image" in attrs.get("class", "")]
    assert [s["data-verdict"] for s in sections] == ["compatible", "could not be checked"]
    cells = [attrs for tag, attrs in elements.tags if tag == "td" and "cell" in attrs.get("class", "").split()]
    assert len(cells) == 2 * len(STAGE_ORDER)
    mixed = {c["data-stage"]: c["class"].split() for c in cells if c["data-image"] == "python:3.11-slim"}
    assert "status-fail" in mixed["conda"] and "status-error" in mixed["apt"]
    assert "status-blocked" in mixed["azureml"] and "status-skipped" in mixed["gpu"]
    ids = {attrs["id"] for _, attrs in elements.tags if "id" in attrs}
    links = [attrs["href"] for tag, attrs in elements.tags if tag == "a" and attrs.get("href", "").startswith("#")]
    assert links and all(link[1:] in ids for link in links)


def test_chromium_screenshot(report: Path, tmp_path: Path) -> None:
    png = tmp_path / "report.png"
    screenshot(report, png, 1280, 1600)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk
    assert (width, height) == (1280, 1600)
    assert len(data) > 20_000  # a blank page compresses to a few kB; a rendered report does not


def _timed_run(started: str, finished: str, seconds: float, observed: str) -> Run:
    scoring = StageResult(
        "scoring",
        Status.PASS,
        "the sample scores",
        observed,
        duration_s=seconds,
        details={"boot_s": 2.5, "create_to_score_s": 3.1},
    )
    python = StageResult(
        "python", Status.FAIL, "Python >=3.8", "Python 3.6.9", "Run `conda install -y python=3.11` in the image."
    )
    os_stage = StageResult("os", Status.PASS, "ubuntu", "ubuntu 22.04", duration_s=0.0)
    image = ImageReport("team/app:1", ImageInfo("team/app:1"), "azureml-current", [os_stage, python, scoring])
    return Run([image], "0.1.0", started, finished, "unix:///x", [])


def test_chromium_shows_the_rough_edges_smoothed(tmp_path: Path) -> None:
    """Issue 13: code spans, a filled time column, readable detail keys, a merged run's own duration, and
    the baseline comparison at the top."""
    from pytest_baseimage.report import merge

    first = _timed_run("2024-06-02T10:00:00+00:00", "2024-06-02T10:00:03.400000+00:00", 3.4, "200 in 0.2 s")
    second = _timed_run("2024-06-02T10:00:40+00:00", "2024-06-02T10:00:42+00:00", 2.0, "200 in 0.3 s")
    second.images[0].name = "team/app:1 (remote)"
    merged = merge([first, second])
    path = tmp_path / "report.html"
    write_html(merged, path, baseline=first)
    dom = dump_dom(path)

    assert "<code>conda install -y python=3.11</code>" in dom and "`conda install" not in dom
    times = re.findall(r'<tr class="stage status-\w+"[^>]*>.*?<td class="num">([^<]*)</td>', dom, re.S)
    assert len(times) == 6 and all(t.strip() for t in times), times
    assert "&lt; 1 ms" in times
    assert '<span class="key">boot time (s)</span>' in dom and '<span class="key">boot_s</span>' not in dom
    assert "create to first score (s)" in dom
    duration = re.search(r"<dt>duration</dt><dd>([^<]*)</dd>", dom)
    assert duration and duration.group(1) == "5.4 s"  # 3.4 s + 2 s, not the 42 s from first start to last end
    assert dom.index('id="baseline"') < dom.index('id="matrix"') < dom.index('class="image"')
