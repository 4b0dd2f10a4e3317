"""The verdict's own logic, without Docker: what it covers, hostile text, cut text, size bounds, JUnit keys.

The end-to-end tests against real containers are in test_verdict_docker.py.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_baseimage.report import Run, load_json, render_html, to_junit_xml, write_json
from pytest_baseimage.report.junit import split_by_image
from pytest_baseimage.results import (
    NOT_CHECKED,
    NOT_REQUIRED,
    ImageInfo,
    ImageReport,
    StageResult,
    Status,
    Verdict,
    verdict_of,
)
from pytest_baseimage.session import OutputPathError, check_output_path
from pytest_baseimage.text import clip, cut_line, escaped, one_line

FORGED = "4.1\r\nconda    pass\x1b[2K\rFORGED: COMPATIBLE\n\u2028END"


def passed(stage: str) -> StageResult:
    return StageResult(stage, Status.PASS, "x", "y")


# -- skipped is not passed -------------------------------------------------------------------------------
def test_a_skip_that_does_not_say_it_was_not_required_counts_as_not_checked():
    plain = StageResult("scoring", Status.SKIPPED, reason="the server cannot be run offline")
    asked_off = StageResult("gpu", Status.SKIPPED, reason="not required by profile p", skip_kind=NOT_REQUIRED)
    assert plain.skip_kind == NOT_CHECKED and plain.not_checked
    assert asked_off.skip_kind == NOT_REQUIRED and not asked_off.not_checked
    assert StageResult("os", Status.PASS, skip_kind=NOT_REQUIRED).skip_kind == ""  # only skips have a kind


def test_the_verdict_line_names_each_stage_that_was_not_checked():
    results = [passed("os"), StageResult("scoring", Status.SKIPPED, reason="not checked: no server offline")]
    image = ImageReport("img", ImageInfo("img"), "p", results)
    assert image.verdict is Verdict.COMPATIBLE
    assert image.verdict_line() == "compatible, scoring not checked: no server offline"
    assert image.to_dict()["not_checked"] == [{"stage": "scoring", "reason": "not checked: no server offline"}]


def test_require_all_stages_makes_a_not_checked_stage_could_not_be_checked_but_a_failure_still_wins():
    skipped = StageResult("scoring", Status.SKIPPED, reason="cannot be reproduced offline")
    failed = StageResult("os", Status.FAIL, "ubuntu", "debian")
    assert verdict_of([passed("os"), skipped]) is Verdict.COMPATIBLE
    assert verdict_of([passed("os"), skipped], require_all=True) is Verdict.UNCHECKED
    assert verdict_of([failed, skipped], require_all=True) is Verdict.NOT_COMPATIBLE
    not_required = StageResult("gpu", Status.SKIPPED, reason="not required", skip_kind=NOT_REQUIRED)
    assert verdict_of([passed("os"), not_required], require_all=True) is Verdict.COMPATIBLE


def test_the_policy_and_the_skip_kind_survive_the_json_and_the_verdict_is_recomputed(tmp_path):
    skipped = StageResult("scoring", Status.SKIPPED, reason="cannot be reproduced offline")
    image = ImageReport("img", ImageInfo("img"), "p", [passed("os"), skipped], require_all_stages=True)
    write_json(Run(images=[image]), tmp_path / "v.json")
    data = json.loads((tmp_path / "v.json").read_text())
    assert data["exit_code"] == 2 and data["images"][0]["results"][1]["skip_kind"] == NOT_CHECKED
    loaded = load_json(tmp_path / "v.json")
    assert loaded.images[0].require_all_stages and loaded.exit_code == 2


def test_the_html_report_lists_what_the_verdict_does_not_cover():
    skipped = StageResult("scoring", Status.SKIPPED, reason="cannot be reproduced offline")
    image = ImageReport("img", ImageInfo("img"), "p", [passed("os"), skipped], deselected=["gpu"])
    html = render_html(Run(images=[image]))
    assert re.search(r'class="not-checked" data-stage="scoring"><strong>scoring not checked:</strong> cannot', html)
    assert "Not judged (deselected with -k/-m):</strong> gpu" in html


def test_an_interrupted_run_is_could_not_be_checked_whatever_its_images_said(tmp_path):
    run = Run(images=[ImageReport("img", ImageInfo("img"), "p", [passed("os")])], interrupted=True)
    assert run.verdict is Verdict.UNCHECKED and run.exit_code == 2
    write_json(run, tmp_path / "v.json")
    assert json.loads((tmp_path / "v.json").read_text())["interrupted"] is True
    assert "run-interrupted" in render_html(run)


def test_nothing_selected_is_exit_5_in_the_verdict_file():
    run = Run(images=[ImageReport("img", ImageInfo("img"), "p", [])], nothing_selected=True)
    assert run.exit_code == 5 and run.to_dict()["exit_code"] == 5


# -- hostile text ------------------------------------------------------------------------------------------
def test_observed_text_cannot_start_or_rewrite_a_line_of_the_failure_message():
    result = StageResult("conda", Status.FAIL, "conda >=4.5", f"conda {FORGED}", "Install Miniconda.")
    lines = result.summary().split("\n")
    assert lines[1] == "  fix: Install Miniconda."  # the plugin's own second line stays
    assert len(lines) == 2 and "\r" not in lines[0] and "\x1b" not in lines[0]
    assert lines[0] == (
        "conda: expected conda >=4.5; observed conda 4.1\\r\\nconda    pass\\rFORGED: COMPATIBLE\\n\\u2028END"
    )


def test_one_line_escapes_every_control_character_and_drops_terminal_escapes():
    text = one_line("a\x00b\x07c\x0bd\x1b]0;title\x07e\x85f\x7fg\tz")
    assert text == "a\\x00b\\x07c\\x0bde\\x85f\\x7fg\tz"
    assert all(ord(ch) >= 0x20 or ch == "\t" for ch in one_line("".join(map(chr, range(0x20)))))


def test_a_usage_error_shows_an_esc_byte_escaped_rather_than_obeying_it():
    assert escaped("--base-image=x\x1b[31m:1") == "--base-image=x\\x1b[31m:1"


def test_junit_and_html_keep_observed_text_on_its_line():
    result = StageResult("conda", Status.FAIL, "conda >=4.5", f"conda {FORGED}", details={"log": "ok\rforged"})
    run = Run(images=[ImageReport("img", ImageInfo("img"), "p", [result], error="")])
    xml = to_junit_xml(run)
    assert "\r" not in xml and "&#13;" not in xml and "&#10;" not in xml
    assert "FORGED: COMPATIBLE" in xml
    html = render_html(run)
    assert "\r" not in html and "conda 4.1\\r\\nconda    pass" in html


# -- cut text ----------------------------------------------------------------------------------------------
def test_clip_is_idempotent_and_a_second_cut_adds_to_the_first():
    original = "x" * 5000
    once = clip(original)
    assert len(once) <= 2000 and once.endswith(f"… [{5000 - once.index('…')} more characters cut]")
    assert clip(once) == once
    twice = clip(once, 300)
    kept = twice.index("…")
    assert len(twice) <= 300 and twice.endswith(f"[{5000 - kept} more characters cut]")


def test_the_cut_count_survives_the_report_transport(tmp_path):
    """to_dict/from_dict (xdist, the JSON file) runs untrusted() again: the count must stay the true one."""
    result = StageResult("python", Status.FAIL, "Python 3.11", "y" * 5000)
    kept = result.observed.index("…")
    expected_tail = f"[{5000 - kept} more characters cut]"
    assert result.observed.endswith(expected_tail)
    again = StageResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again.observed == result.observed
    write_json(Run(images=[ImageReport("img", ImageInfo("img"), "p", [result])]), tmp_path / "v.json")
    assert load_json(tmp_path / "v.json").images[0].results[0].observed.endswith(expected_tail)


def test_a_long_terminal_line_is_cut_at_words_and_keeps_the_cause_at_its_end():
    message = (
        "an InferenceSession asked for CUDAExecutionProvider fell back to the CPU with no error at all, "
        "so the model ran slowly; compiled in: CUDAExecutionProvider, CPUExecutionProvider"
    )
    line = cut_line(message, 100)
    assert len(line) <= 100 and " … " in line
    assert line.endswith("CUDAExecutionProvider, CPUExecutionProvider")
    head = line.split(" … ")[0]
    assert message.startswith(head) and message[len(head)] == " "  # a whole word before the mark
    assert cut_line("short enough", 100) == "short enough"


# -- the JSON's size ---------------------------------------------------------------------------------------
def test_the_json_verdict_is_bounded_and_says_what_it_cut(tmp_path):
    packages = {f"pkg{i:06d}": "1.0-1ubuntu1" for i in range(120_000)}
    result = StageResult(
        "apt", Status.PASS, "x", "y", details={"present": list(packages), "log": "z" * 3_000_000, "n": 3}
    )
    image = ImageReport("img", ImageInfo("img"), "p", [result], facts={"apt": packages, "python": "3.11"})
    path = tmp_path / "v.json"
    write_json(Run(images=[image]), path)
    assert path.stat().st_size < 1_000_000
    data = json.loads(path.read_text())["images"][0]
    stage = data["results"][0]
    assert stage["truncated"] == {"details.present": 120_000 - 1000, "details.log": 3_000_000 - 20_000}
    assert len(stage["details"]["present"]) == 1000 and stage["details"]["n"] == 3
    assert data["truncated"] == {"facts.apt": 120_000 - 5000} and data["facts"]["python"] == "3.11"
    rewritten = tmp_path / "again.json"
    write_json(load_json(path), rewritten)  # a bounded file stays as it is, counts and all
    assert json.loads(rewritten.read_text())["images"][0] == data


def test_a_stage_with_many_large_values_is_bounded_as_a_whole(tmp_path):
    details = {f"log {i}": "w" * 20_000 for i in range(100)}  # each within the per-value bound
    image = ImageReport("img", ImageInfo("img"), "p", [StageResult("azureml", Status.FAIL, details=details)])
    write_json(Run(images=[image]), tmp_path / "v.json")
    assert (tmp_path / "v.json").stat().st_size < 600_000
    truncated = json.loads((tmp_path / "v.json").read_text())["images"][0]["results"][0]["truncated"]
    assert truncated and all(key.startswith("details.log ") for key in truncated)


# -- JUnit groups by the display name ---------------------------------------------------------------------
def test_junit_split_keeps_two_matrix_entries_with_one_reference_apart(tmp_path):
    """Two matrix entries (two engines) check the same reference: two <testsuite>s, as in JSON and HTML."""
    cases = "".join(
        f'<testcase classname="test_compliance" name="test_{stage}[{name}]" time="0.1"><properties>'
        f'<property name="image" value="repo/app:1"/><property name="image_name" value="{name}"/>'
        "</properties></testcase>"
        for name in ("app-on-linux", "app-on-remote")
        for stage in ("os", "python")
    )
    path = tmp_path / "junit.xml"
    path.write_text(f'<testsuites><testsuite name="pytest" tests="4">{cases}</testsuite></testsuites>')
    split_by_image(str(path), order=["app-on-remote", "app-on-linux"])
    suites = ET.parse(path).getroot().findall("testsuite")
    assert [(s.get("name"), s.get("tests")) for s in suites] == [("app-on-remote", "2"), ("app-on-linux", "2")]


# -- report paths ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("relative", "message"),
    [("missing/v.json", "does not exist"), ("file/v.json", "does not exist"), (".", "is a directory")],
)
def test_an_unusable_report_path_is_refused_and_nothing_is_created(tmp_path, relative, message):
    (tmp_path / "file").write_text("")
    before = sorted(Path(tmp_path).rglob("*"))
    with pytest.raises(OutputPathError, match=message):
        check_output_path("--compat-json", str(tmp_path / relative))
    assert sorted(Path(tmp_path).rglob("*")) == before


def test_junitxml_may_name_a_directory_pytest_will_create_but_not_one_under_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    check_output_path("--junitxml", str(tmp_path / "new" / "dir" / "j.xml"), may_create_dirs=True)
    assert not (tmp_path / "new").exists()
    with pytest.raises(OutputPathError, match="is not a directory"):
        check_output_path("--junitxml", str(tmp_path / "file" / "j.xml"), may_create_dirs=True)
