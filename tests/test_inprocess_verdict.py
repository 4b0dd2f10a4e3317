"""The verdict and the exit policy, run in process on the fake engine (tests/fake_engine.py): the real probe
parser and the real stages judge canned facts, and the hooks turn them into the exit code, the JSON verdict
and the terminal summary. No Docker."""

from __future__ import annotations

from fake_engine import debian_image
from inprocess import FAKE_PROFILE, GOOD, GOOD_ID, run_plugin

pytest_plugins = ["pytester"]

STATIC = ("os", "conda", "python", "apt", "azureml")


def broken(**changes):
    """The good image with some of its facts replaced."""
    return {GOOD: debian_image(GOOD_ID, **changes)}


def python_with(**changes):
    python = debian_image(GOOD_ID)["python"]
    return {**python, **changes}


def test_a_compatible_image_exits_0_with_every_static_stage_passed(pytester):
    run = run_plugin(pytester, f"--base-image={GOOD}")
    assert run.code == 0, run.out
    assert run.json["verdict"] == "compatible" and run.json["exit_code"] == 0
    live = {"scoring": "skipped", "deployment": "skipped", "gpu": "skipped"}  # not asked for by the test profile
    assert run.statuses() == {**dict.fromkeys(STATIC, "pass"), **live}
    assert run.image()["info"]["image_id"] == GOOD_ID
    assert run.created == [f"candidate {GOOD_ID}"]  # one container for the whole suite
    assert run.left == []
    assert len(run.swept) == 1  # the session's cleanup ran on its engine


def test_a_wrong_python_fails_the_run_with_exit_1_and_blocks_what_needs_python(pytester):
    run = run_plugin(pytester, f"--base-image={GOOD}", images=broken(python=python_with(version="3.8.10")))
    assert run.code == 1, run.out
    assert run.json["verdict"] == "not compatible" and run.json["exit_code"] == 1
    statuses = run.statuses()
    assert statuses["python"] == "fail" and statuses["azureml"] == "blocked"
    assert (statuses["os"], statuses["conda"], statuses["apt"]) == ("pass", "pass", "pass")
    python = next(r for r in run.image()["results"] if r["stage"] == "python")
    assert "3.8.10" in python["observed"]
    assert run.left == []


def test_the_terminal_summary_names_the_verdict_and_each_failed_stage(pytester):
    run = run_plugin(pytester, f"--base-image={GOOD}", images=broken(conda=None))
    assert run.code == 1
    run.result.stdout.fnmatch_lines(["*base image verdict*", f"{GOOD}: NOT COMPATIBLE*(profile fake)", "  conda*fail*"])


def test_an_import_that_fails_in_the_image_fails_azureml_with_its_last_traceback_line(pytester):
    python = python_with(imports={"azureml_inference_server_http": "Traceback...\nImportError: libfoo.so.1"})
    run = run_plugin(pytester, f"--base-image={GOOD}", images=broken(python=python))
    assert run.code == 1
    azureml = next(r for r in run.image()["results"] if r["stage"] == "azureml")
    assert azureml["status"] == "fail" and "ImportError: libfoo.so.1" in azureml["observed"]


def test_an_apt_package_whose_library_is_gone_fails_apt_naming_the_file(pytester):
    files = dict(debian_image(GOOD_ID)["files"])
    del files["/usr/lib/runit.so.1"]
    run = run_plugin(pytester, f"--base-image={GOOD}", images=broken(files=files))
    assert run.code == 1
    apt = next(r for r in run.image()["results"] if r["stage"] == "apt")
    assert apt["status"] == "fail" and "/usr/lib/runit.so.1" in apt["observed"]


def test_a_failed_image_is_told_which_shipped_profiles_its_static_stages_pass(pytester):
    """also_passes is computed where the facts are and travels in the report to the verdict."""
    run = run_plugin(pytester, f"--base-image={GOOD}", images=broken(python=python_with(version="3.12.1")))
    assert run.code == 1
    assert isinstance(run.image()["also_passes"], list)
    assert "fake" not in run.image()["also_passes"]  # never the profile it was judged by


def test_an_image_that_cannot_run_a_process_is_judged_from_its_files(pytester):
    run = run_plugin(pytester, f"--base-image={GOOD}", images=broken(runs=False))
    assert run.code == 1, run.out
    statuses = run.statuses()
    assert statuses["os"] == "pass" and statuses["conda"] == "fail"
    conda = next(r for r in run.image()["results"] if r["stage"] == "conda")
    assert "cannot run anything in the image" in conda["observed"]
    assert run.left == []  # the fallback container (created, never started) was removed too


def test_the_engine_failing_mid_probe_is_exit_2_could_not_be_checked(pytester):
    run = run_plugin(pytester, f"--base-image={GOOD}", exec_error="connection reset", answers=False)
    assert run.code == 2, run.out
    assert run.json["verdict"] == "could not be checked" and run.json["exit_code"] == 2
    conda = next(r for r in run.image()["results"] if r["stage"] == "conda")
    assert conda["status"] == "error" and "stopped answering" in conda["reason"]
    assert "Traceback" not in run.out


def test_an_exec_the_engine_refused_makes_the_probed_stages_errors_not_failures(pytester):
    """The engine still answers, so the refusal is not blamed on a dead engine, yet it is never the image's."""
    run = run_plugin(pytester, f"--base-image={GOOD}", exec_error="exec refused")
    assert run.code == 2, run.out
    statuses = run.statuses()
    assert [statuses[stage] for stage in ("os", "conda", "python")] == ["error"] * 3
    assert "fail" not in statuses.values()
    os_result = next(r for r in run.image()["results"] if r["stage"] == "os")
    assert "exec refused" in os_result["reason"] and "stopped answering" not in os_result["reason"]


def test_require_all_stages_turns_a_stage_not_checked_into_exit_2(pytester):
    profile = pytester.path / "unreproducible.toml"
    profile.write_text(
        f'name = "unreproducible"\nextends = "{FAKE_PROFILE}"\n'
        '[scoring]\nenabled = true\nreproducible = false\nserver = "a cloud-only server"\n'
    )
    relaxed = run_plugin(pytester, f"--base-image={GOOD}", profile=profile)
    assert relaxed.code == 0, relaxed.out
    assert relaxed.image()["not_checked"][0]["stage"] == "scoring"
    strict = run_plugin(pytester, f"--base-image={GOOD}", "--require-all-stages", profile=profile)
    assert strict.code == 2
    assert strict.json["verdict"] == "could not be checked" and strict.image()["require_all_stages"] is True


def test_a_users_own_failing_test_still_fails_a_compatible_run(pytester):
    pytester.makepyfile(test_mine="def test_mine():\n    assert False\n")
    run = run_plugin(pytester, f"--base-image={GOOD}", "--compliance-suite=always", "test_mine.py")
    assert run.code == 1
    assert run.json["verdict"] == "compatible"  # the image is fine; the run failed for the user's test
    run.result.assert_outcomes(passed=5, skipped=3, failed=1)  # the static stages pass; three live ones skip


def test_a_deselected_stage_is_named_as_not_judged_and_does_not_block(pytester):
    run = run_plugin(pytester, f"--base-image={GOOD}", "-m", "os or apt")
    assert run.code == 0, run.out
    assert set(run.statuses()) == {"os", "apt"}
    assert run.image()["deselected"] == ["conda", "python", "azureml", "scoring", "deployment", "gpu"]
    assert "not judged (deselected)" in run.out


def test_a_deselected_prerequisite_that_failed_still_shows_why_its_stage_was_blocked(pytester):
    run = run_plugin(pytester, f"--base-image={GOOD}", "-m", "azureml", images=broken(python=None))
    assert run.code == 1, run.out
    assert run.statuses() == {"python": "fail", "azureml": "blocked"}
    # ...and its test fails as the verdict does (before: a skip, so CI's test tab showed no failure at all)
    assert run.junit is not None
    suites = run.junit.findall("testsuite")
    assert sum(int(s.get("failures")) for s in suites) == 1 and sum(int(s.get("skipped")) for s in suites) == 0
    assert "blocked by python (left out by -k/-m), which failed: python:" in run.out


def test_nothing_selected_is_exit_5_with_a_verdict_that_says_so(pytester):
    run = run_plugin(pytester, f"--base-image={GOOD}", "-k", "no_such_stage")
    assert run.code == 5
    assert run.json["nothing_selected"] is True
    assert "-k/-m left none of the stages" in run.json["notes"][0]
    assert "nothing selected" in run.out
    # The candidate may have begun starting while pytest collected (serial runs do): nothing of it is left.
    assert run.created in ([], [f"candidate {GOOD_ID}"]) and run.left == []


def test_with_the_plugins_options_absent_a_users_tests_run_untouched(pytester):
    pytester.makepyfile(test_mine="def test_mine(baseimage):\n    pass\n")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "test_mine.py")
    result.assert_outcomes(skipped=1)  # the fixture skips: no --base-image given
    assert "base image verdict" not in result.stdout.str()


# Registered as a plugin, not left as conftest hooks: those apply only to tests under the conftest's directory,
# and the bundled suite lives in the package.
INTERRUPT_AT_CONDA = """

class Interrupt:
    def pytest_runtest_call(self, item):
        if item.name.startswith("test_conda"):
            raise KeyboardInterrupt


def pytest_configure(config):
    config.pluginmanager.register(Interrupt())
"""
CRASH_AFTER_A_TEST = """

class Crash:
    def pytest_runtest_logfinish(self, nodeid):
        raise RuntimeError("a bug in some plugin")


def pytest_configure(config):
    config.pluginmanager.register(Crash())
"""


def test_a_run_interrupted_mid_suite_is_exit_2_and_its_verdict_says_interrupted(pytester):
    run = run_plugin(pytester, f"--base-image={GOOD}", conftest=INTERRUPT_AT_CONDA)
    assert run.code == 2, run.out
    assert run.json["interrupted"] is True and run.json["verdict"] == "could not be checked"
    assert "the run stopped before every stage ran" in run.image()["error"]
    assert run.statuses() == {"os": "pass"}  # what ran before the interrupt is kept
    assert run.left == []


def test_an_internal_error_writes_no_verdict_rather_than_a_wrong_one(pytester):
    run = run_plugin(pytester, f"--base-image={GOOD}", conftest=CRASH_AFTER_A_TEST)
    assert run.code == 3, run.out
    assert run.json is None
    assert run.left == []
