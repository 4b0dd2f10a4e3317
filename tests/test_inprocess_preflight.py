"""What happens before any stage runs, in process on the fake engine: usage errors (exit 4, one line, a
usage-error verdict), and a preflight that finds nothing can be checked (exit 2, the reports still written).
The usage errors run on a fake engine that cannot be reached: a run that asked it would end with exit 2."""

from __future__ import annotations

import json

import pytest
from fake_engine import debian_image
from inprocess import GOOD, GOOD_ID, run_plugin

pytest_plugins = ["pytester"]

OTHER = "fake/other:2"


def usage_case(pytester: pytest.Pytester, name: str) -> list[str]:
    """The arguments of one usage error, with the files it needs written into pytester's directory."""
    path = pytester.path
    (path / "bad.json").write_text("{not json")
    (path / "matrix.toml").write_text('[[images]]\nref = "x:1"\nnot_a_key = 1\n')
    (path / "profile.toml").write_text('name = "p"\nextends = "azureml-current"\n[python]\nversion = 3\n')
    return {
        "unknown profile name": ["--base-image-profile=no-such-profile"],
        "malformed profile file": [f"--base-image-profile={path / 'profile.toml'}"],
        "probe timeout 0 (argparse)": ["--probe-timeout=0"],
        "unknown --pull choice (argparse)": ["--pull=sometimes"],
        "bad matrix file": [f"--base-image-matrix={path / 'matrix.toml'}"],
        "html path in a missing directory": [f"--compat-html={path / 'nowhere' / 'r.html'}"],
        "unreadable --compat-baseline": [f"--compat-baseline={path / 'bad.json'}"],
    }[name]


CASES = [
    ("unknown profile name", "no-such-profile"),
    ("malformed profile file", "version"),
    ("probe timeout 0 (argparse)", "--probe-timeout"),
    ("unknown --pull choice (argparse)", "--pull"),
    ("bad matrix file", "not_a_key"),
    ("html path in a missing directory", "does not exist"),
    ("unreadable --compat-baseline", "--compat-baseline"),
]


@pytest.mark.parametrize(("case", "named"), CASES, ids=[case for case, _ in CASES])
def test_a_usage_error_is_exit_4_in_one_line_with_a_usage_error_verdict(pytester, case, named):
    args = usage_case(pytester, case)
    run = run_plugin(pytester, f"--base-image={GOOD}", *args, unreachable=True, profile=None)
    assert run.code == 4, run.out
    assert "Traceback" not in run.out
    assert any(named in line and "error" in line.lower() for line in run.result.errlines), run.out
    assert run.json is not None, "exit 4 keeps a verdict"
    assert (run.json["verdict"], run.json["exit_code"], run.json["images"]) == ("usage error", 4, [])
    assert run.json["images_given"] == [GOOD]
    assert named in run.json["error"]


def test_an_unwritable_json_path_is_exit_4_and_writes_nothing(pytester):
    target = pytester.path / "missing-dir" / "v.json"
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", f"--base-image={GOOD}", f"--compat-json={target}")
    assert result.ret == 4
    assert "--compat-json=" in result.stderr.str() and "does not exist" in result.stderr.str()
    assert not target.parent.exists()


def test_a_junitxml_path_under_a_file_is_exit_4(pytester):
    (pytester.path / "file").write_text("")
    run = run_plugin(pytester, f"--base-image={GOOD}", f"--junitxml={pytester.path / 'file' / 'j.xml'}")
    assert run.code == 4, run.out
    assert "is not a directory" in run.out


def test_an_unreachable_engine_is_exit_2_before_the_session_with_every_report_written(pytester):
    html = pytester.path / "report.html"
    run = run_plugin(pytester, f"--base-image={GOOD}", f"--compat-html={html}", unreachable=True)
    assert run.code == 2, run.out
    assert "cannot reach the Docker engine at fake://engine" in run.out
    assert "Traceback" not in run.out
    assert run.json["verdict"] == "could not be checked" and run.json["exit_code"] == 2
    assert "cannot reach the Docker engine" in run.image()["error"]
    assert html.exists() and GOOD in html.read_text(encoding="utf-8")
    # A CI step that publishes test results finds one suite for the image, with the reason as an error.
    suites = run.junit.findall("testsuite") if run.junit.tag == "testsuites" else [run.junit]
    assert [suite.get("name") for suite in suites] == [GOOD]
    assert suites[0].find("testcase/error") is not None


def test_a_missing_image_that_cannot_be_pulled_is_exit_2_naming_it(pytester):
    run = run_plugin(pytester, "--base-image=fake/absent:1")
    assert run.code == 2, run.out
    error = run.image("fake/absent:1")["error"]
    assert "fake/absent:1" in error and "pulling it failed" in error
    assert run.created == []


def test_pull_never_refuses_to_pull_a_missing_image(pytester):
    run = run_plugin(pytester, "--base-image=fake/absent:1", "--pull=never")
    assert run.code == 2
    assert "--pull=never forbids pulling it" in run.image("fake/absent:1")["error"]


def test_an_engine_that_fails_the_inspect_is_exit_2(pytester):
    run = run_plugin(pytester, f"--base-image={GOOD}", inspect_error="500 Server Error")
    assert run.code == 2
    assert "cannot inspect image" in run.image()["error"]


def test_one_missing_image_does_not_stop_the_others_from_being_checked(pytester):
    images = {GOOD: debian_image(GOOD_ID), OTHER: debian_image("sha256:" + "b" * 64)}
    given = [f"--base-image={GOOD}", "--base-image=fake/absent:1", f"--base-image={OTHER}"]
    run = run_plugin(pytester, *given, images=images)
    assert run.code == 2, run.out  # the worst verdict of the run
    assert [image["name"] for image in run.json["images"]] == [GOOD, "fake/absent:1", OTHER]
    assert run.image(GOOD)["verdict"] == run.image(OTHER)["verdict"] == "compatible"
    assert run.image("fake/absent:1")["verdict"] == "could not be checked"
    assert run.left == []


def test_collect_only_lists_the_stages_without_asking_the_engine(pytester):
    run = run_plugin(pytester, f"--base-image={GOOD}", "--collect-only", "-q", unreachable=True)
    assert run.code == 0, run.out
    assert f"test_compliance.py::test_os[{GOOD}]" in run.out
    assert run.json is None  # nothing was judged, so there is no verdict to write


def test_compliance_suite_always_without_an_image_says_what_it_needs(pytester):
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--compliance-suite=always")
    assert result.ret == 5
    result.stdout.fnmatch_lines(["*--compliance-suite=always needs --base-image=IMAGE*"])


def test_an_interrupt_during_the_preflight_still_writes_an_interrupted_verdict(pytester, monkeypatch):
    from pytest_baseimage import target

    def interrupted(self, **_):
        raise KeyboardInterrupt

    monkeypatch.setattr(target.ImageCheck, "prepare", interrupted)
    run = run_plugin(pytester, f"--base-image={GOOD}")
    assert run.code == 2, run.out
    assert run.json["interrupted"] is True and run.json["verdict"] == "could not be checked"


def test_a_registry_password_the_image_echoes_is_redacted_from_the_json_and_html(pytester, monkeypatch):
    """The image prints the password where a fact belongs (its `conda --version`): observed text is reported,
    the secret never is."""
    monkeypatch.setenv("FAKE_REGISTRY_PW", "s3cret-pw")
    args = ["--registry-username=u", "--registry-password-env=FAKE_REGISTRY_PW", "--registry=registry.example"]
    args += ["--pull=never"]  # the fake engine has no registry to ask about the tag
    echoing = debian_image(GOOD_ID, conda={"exe": "/opt/conda/bin/conda", "version": "s3cret-pw"})
    images = {"registry.example/" + GOOD: echoing}
    html = pytester.path / "r.html"
    run = run_plugin(pytester, f"--base-image={GOOD}", f"--compat-html={html}", *args, images=images)
    assert run.code == 1, run.out
    conda = next(r for r in run.image()["results"] if r["stage"] == "conda")
    assert conda["status"] == "fail" and "conda ***" in conda["observed"]  # what it printed, the secret masked
    assert "s3cret-pw" not in json.dumps(run.json)
    assert "s3cret-pw" not in html.read_text(encoding="utf-8")
