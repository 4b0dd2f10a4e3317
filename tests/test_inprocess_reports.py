"""The reports a run writes, in process on the fake engine: the JSON verdict (valid against its schema), the
HTML report (with a baseline), pytest's JUnit XML regrouped into one suite per image, a user's own tests kept
apart; and the same results when xdist carries them from workers to the controller."""

from __future__ import annotations

import json
from importlib import resources

from fake_engine import debian_image
from inprocess import GOOD, GOOD_ID, run_plugin

from pytest_baseimage.composition import STAGE_ORDER

pytest_plugins = ["pytester"]

BAD = "fake/bad:1"
BAD_ID = "sha256:" + "b" * 64
STAGES = list(STAGE_ORDER)


def two_images() -> dict[str, dict]:
    """The good image, and one whose conda is missing (not compatible)."""
    return {GOOD: debian_image(GOOD_ID), BAD: debian_image(BAD_ID, conda=None)}


def cases_by_suite(junit) -> dict[str, list[tuple[str, str]]]:
    """Suite name -> [(test name, outcome)] in file order."""
    suites = junit.findall("testsuite") if junit.tag == "testsuites" else [junit]
    out = {}
    for suite in suites:
        cases = []
        for case in suite.findall("testcase"):
            outcome = next((tag for tag in ("failure", "error", "skipped") if case.find(tag) is not None), "passed")
            cases.append((case.get("name"), outcome))
        out[suite.get("name")] = cases
    return out


def schema_valid(data: dict) -> None:
    import jsonschema

    schema = json.loads(resources.files("pytest_baseimage.report").joinpath("schema.json").read_text("utf-8"))
    jsonschema.Draft202012Validator(schema).validate(data)


def test_the_json_verdict_is_valid_against_its_schema_and_keeps_the_images_in_the_order_given(pytester):
    run = run_plugin(pytester, f"--base-image={BAD}", f"--base-image={GOOD}", images=two_images())
    assert run.code == 1, run.out
    schema_valid(run.json)
    assert [image["name"] for image in run.json["images"]] == [BAD, GOOD]
    assert [r["stage"] for r in run.image(BAD)["results"]] == STAGES
    assert run.image(BAD)["verdict"] == "not compatible" and run.image(GOOD)["verdict"] == "compatible"
    assert run.image(GOOD)["facts"]["python"] == "3.11.7"
    assert "probe_s" in run.image(GOOD)["timings"]


def test_junit_is_regrouped_into_one_suite_per_image_in_stage_order(pytester):
    run = run_plugin(pytester, f"--base-image={BAD}", f"--base-image={GOOD}", images=two_images())
    suites = cases_by_suite(run.junit)
    assert list(suites) == [BAD, GOOD]
    assert [name for name, _ in suites[GOOD]] == [f"test_{stage}[{GOOD}]" for stage in STAGES]
    assert dict(suites[BAD])[f"test_conda[{BAD}]"] == "failure"
    suite = next(s for s in run.junit.findall("testsuite") if s.get("name") == BAD)
    assert (suite.get("tests"), suite.get("failures")) == (str(len(STAGES)), "1")


def test_junit_cases_carry_the_image_and_stage_as_properties(pytester):
    run = run_plugin(pytester, f"--base-image={GOOD}")
    case = next(c for c in run.junit.iter("testcase") if c.get("name") == f"test_python[{GOOD}]")
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert props["image"] == GOOD and props["image_id"] == GOOD_ID
    assert (props["stage"], props["status"], props["profile"]) == ("python", "pass", "fake")


def test_a_users_own_tests_get_a_suite_of_their_own_beside_the_images(pytester):
    pytester.makepyfile(test_mine="def test_mine():\n    pass\n")
    run = run_plugin(pytester, f"--base-image={GOOD}", "--compliance-suite=always", "test_mine.py")
    suites = cases_by_suite(run.junit)
    assert list(suites) == [GOOD, "pytest"]
    assert suites["pytest"] == [("test_mine", "passed")]


def test_two_matrix_entries_of_one_image_on_two_engines_keep_their_own_suites_and_verdicts(pytester):
    matrix = pytester.path / "matrix.toml"
    matrix.write_text(
        f'[[images]]\nref = "{GOOD}"\nname = "as-fake"\ndocker_host = "tcp://one:2375"\n'
        f'[[images]]\nref = "{GOOD}"\nname = "as-2020"\nprofile = "azureml-2020"\ndocker_host = "tcp://two:2375"\n'
    )
    run = run_plugin(pytester, f"--base-image-matrix={matrix}")
    assert run.code == 1, run.out  # azureml-2020 wants Ubuntu and an older Python
    assert list(cases_by_suite(run.junit)) == ["as-fake", "as-2020"]
    assert run.image("as-fake")["verdict"] == "compatible"
    assert run.image("as-2020")["verdict"] == "not compatible"
    assert run.created == [f"candidate {GOOD_ID}"] * 2 and run.left == []


def test_the_html_report_shows_each_image_and_the_changes_since_a_baseline(pytester):
    first = run_plugin(pytester, f"--base-image={GOOD}")
    baseline = pytester.path / "baseline.json"
    baseline.write_text(json.dumps(first.json))
    html = pytester.path / "report.html"
    python = {**debian_image(GOOD_ID)["python"], "version": "3.11.9"}
    images = {GOOD: debian_image(GOOD_ID, python=python)}
    args = [f"--base-image={GOOD}", f"--compat-html={html}", f"--compat-baseline={baseline}"]
    run = run_plugin(pytester, *args, images=images)
    assert run.code == 0, run.out
    text = html.read_text(encoding="utf-8")
    assert GOOD in text and "compatible" in text
    assert "3.11.7" in text and "3.11.9" in text  # the baseline's Python and this run's
    assert f"HTML report: {html}" in run.out


def test_a_baseline_that_is_not_a_report_is_ignored_with_a_warning_by_the_html(pytester):
    """--compat-baseline is checked before the run (exit 4); one that goes bad during it only loses the diff."""
    baseline = pytester.path / "baseline.json"
    first = run_plugin(pytester, f"--base-image={GOOD}")
    baseline.write_text(json.dumps(first.json))
    html = pytester.path / "report.html"
    spoil = f"\n\ndef pytest_sessionstart(session):\n    open({str(baseline)!r}, 'w').write('not json')\n"
    args = [f"--base-image={GOOD}", f"--compat-html={html}", f"--compat-baseline={baseline}"]
    run = run_plugin(pytester, *args, conftest=spoil)
    assert run.code == 0, run.out
    assert html.exists()
    assert "baseline" in run.out and "ignored" in run.out


def test_under_xdist_every_result_reaches_the_controller_once_per_image(pytester):
    """Results travel on the test reports from the workers; loadgroup keeps one image on one worker."""
    run = run_plugin(pytester, "-n", "2", f"--base-image={BAD}", f"--base-image={GOOD}", images=two_images())
    assert run.code == 1, run.out
    assert [r["stage"] for r in run.image(GOOD)["results"]] == STAGES
    assert [r["stage"] for r in run.image(BAD)["results"]] == STAGES
    assert run.image(BAD)["verdict"] == "not compatible" and run.image(GOOD)["verdict"] == "compatible"
    assert sorted(run.created) == sorted([f"candidate {GOOD_ID}", f"candidate {BAD_ID}"])  # one container each
    assert run.left == []
    assert len(set(run.swept)) == 3  # the controller (its preflight) and each worker: every session cleaned up
    suites = cases_by_suite(run.junit)
    assert list(suites) == [BAD, GOOD]
    assert [name for name, _ in suites[GOOD]] == [f"test_{stage}[{GOOD}]" for stage in STAGES]  # no @group suffix


def test_under_xdist_a_deselected_stage_is_named_as_not_judged(pytester):
    """The workers deselect and collect; the controller, which collects nothing, learns of the deselection
    from each worker's output, so the verdict names apt as not judged, as a run without xdist does."""
    run = run_plugin(pytester, "-n", "2", f"--base-image={GOOD}", "-m", "not apt")
    assert run.code == 0, run.out
    assert list(run.statuses()) == ["os", "conda", "python", "azureml", "scoring", "deployment", "gpu"]
    assert run.image()["verdict"] == "compatible"
    assert run.image()["deselected"] == ["apt"]
    assert "not judged (deselected): apt" in run.out


# A plugin that runs the suite backwards, as a random-order plugin may: results then arrive out of stage order.
BACKWARDS = """

class Backwards:
    def pytest_collection_modifyitems(self, items):
        items.reverse()


def pytest_configure(config):
    config.pluginmanager.register(Backwards())
"""


def test_results_that_arrive_out_of_stage_order_are_reported_in_stage_order(pytester):
    run = run_plugin(pytester, f"--base-image={GOOD}", "-v", conftest=BACKWARDS)
    assert run.code == 0, run.out
    ran = [line.split("::test_")[1].split("[")[0] for line in run.result.outlines if "::test_" in line]
    assert ran == STAGES[::-1]  # the run went gpu first
    assert [r["stage"] for r in run.image()["results"]] == STAGES
