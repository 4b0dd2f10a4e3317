"""The three reports of one real mixed run agree, test for test; a JSON round trip through merge keeps them."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from conftest import FIXTURE_PROFILE, run_pytest

pytestmark = pytest.mark.docker

# JUnit has no "blocked": pytest reports both blocked and skipped stages as skipped.
JUNIT_OF = {"pass": "passed", "fail": "failure", "error": "failure", "blocked": "skipped", "skipped": "skipped"}


class Cells(HTMLParser):
    """(image, stage) -> status of the matrix cells, and the verdict of each image section."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], str] = {}
        self.verdicts: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "td" and "cell" in (a.get("class") or "").split():
            self.cells[(a["data-image"], a["data-stage"])] = a["data-status"]
        if tag == "section" and a.get("class") == "image":
            self.verdicts[a["data-image"]] = a["data-verdict"]


def junit_outcomes(path) -> dict[tuple[str, str], str]:
    out = {}
    for suite in ET.parse(path).getroot().iter("testsuite"):
        for case in suite.iter("testcase"):
            outcome = next((tag for tag in ("failure", "error", "skipped") if case.find(tag) is not None), "passed")
            stage = case.get("name").split("[")[0].removeprefix("test_")
            out[(suite.get("name"), stage)] = outcome
    return out


def html_cells(path) -> Cells:
    parser = Cells()
    parser.feed(path.read_text())
    return parser


def test_html_json_and_junit_agree_and_survive_a_merge(tmp_path, images, no_leaks):
    good, broken = images("good"), images("wrong-python")  # pass + fail + blocked + skipped, two images
    paths = {name: tmp_path / name for name in ("junit.xml", "run.json", "run.html")}
    proc = run_pytest(
        f"--base-image={good}",
        f"--base-image={broken}",
        f"--profile={FIXTURE_PROFILE}",
        f"--junitxml={paths['junit.xml']}",
        f"--compat-json={paths['run.json']}",
        f"--compat-html={paths['run.html']}",
        "-q",
        cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stdout
    run = json.loads(paths["run.json"].read_text())
    statuses = {(image["name"], r["stage"]): r["status"] for image in run["images"] for r in image["results"]}
    assert {"pass", "fail", "blocked", "skipped"} <= set(statuses.values())

    junit = junit_outcomes(paths["junit.xml"])
    assert set(junit) == set(statuses)
    assert {key: JUNIT_OF[status] for key, status in statuses.items()} == junit

    cells = html_cells(paths["run.html"])
    assert cells.cells == statuses
    assert cells.verdicts == {good: "compatible", broken: "not compatible"}
    assert run["exit_code"] == proc.returncode

    merged_html, merged_json = tmp_path / "merged.html", tmp_path / "merged.json"
    merge = [sys.executable, "-m", "pytest_baseimage.report", "merge", str(paths["run.json"])]
    done = subprocess.run(
        [*merge, "--html", str(merged_html), "--json", str(merged_json)], capture_output=True, text=True
    )
    assert done.returncode == 1, done.stderr
    assert html_cells(merged_html).cells == cells.cells
    assert html_cells(merged_html).verdicts == cells.verdicts
    again = json.loads(merged_json.read_text())
    assert [i["results"] for i in again["images"]] == [i["results"] for i in run["images"]]
