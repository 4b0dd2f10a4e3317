"""The pytest hooks: thin. Options in, Targets out; results travel on test reports (so xdist works) and
come back together at the end for the verdict, the exit code and the reports."""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from . import deployment, gpu, matrix, probe_options, profiles, registry, scoring
from .engine import cleanup_all, install_signal_handlers
from .errors import BaseImageError, ExitCode
from .results import STAGE_ORDER, StageResult, Status
from .session import REPORT_ATTR, Ending, VerdictSession, check_output_path, merge_result, write_usage_verdict
from .target import ImageCheck, Target, engine_for
from .text import escaped, inert_lines, one_line

TARGETS_KEY = pytest.StashKey[list]()
CHECKS_KEY = pytest.StashKey[dict]()
SELECTED_KEY = pytest.StashKey[dict]()
SESSION_KEY = pytest.StashKey[VerdictSession]()
__all__ = ["REPORT_ATTR", "merge_result"]  # re-exported: tests reach the merge through this module


# -- options -------------------------------------------------------------------------------------------
def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    config = pluginmanager.get_plugin("pytestconfig")
    if config is not None:  # argparse's errors end the run before pytest_configure: a cleanup still sees them
        config.add_cleanup(lambda: _verdict_after_parse_error(config))
    group = parser.getgroup("baseimage", "base image compliance (pytest-baseimage)")
    group.addoption(
        "--base-image",
        action="append",
        default=[],
        metavar="IMAGE",
        dest="base_images",
        help="Docker image to certify (repo:tag, repo@sha256:..., or an image id). Repeat for "
        "several images; each gets its own container and results.",
    )
    group.addoption(
        "--base-image-matrix",
        default=None,
        metavar="FILE.toml",
        help="check every image listed in a matrix file ([[images]] with ref, name, profile, docker_host "
        "or context, platform and part tables; [defaults] for common settings). With -n N (pytest-xdist) "
        "images run in parallel, one worker per image: --dist=loadgroup is chosen unless you pick a mode.",
    )
    group.addoption(
        *profile_option_names(parser),
        default=None,
        dest="base_image_profile",
        metavar="NAME|PATH",
        help=f"requirement set: a built-in name ({', '.join(profiles.builtin_names())}) or a "
        f".toml file that may extend one. Default: {profiles.DEFAULT_PROFILE}. The short form --profile is "
        "left out when another plugin (pytest-profiling) owns it.",
    )
    group.addoption(
        "--compliance-suite",
        choices=("auto", "always", "never"),
        default="auto",
        help="run the bundled compliance suite: auto = when no test paths are given (default), "
        "always = also next to your own tests, never = only your tests (use the "
        "`baseimage` / `baseimage_host` fixtures).",
    )
    group.addoption(
        "--compat-json",
        default=None,
        metavar="PATH",
        help="write the verdict and every stage result as JSON (schema_version 1).",
    )
    group.addoption(
        "--compat-html", default=None, metavar="PATH", help="write a self-contained HTML compatibility report."
    )
    group.addoption(
        "--compat-baseline",
        default=None,
        metavar="OLD.json",
        help="compare with an earlier --compat-json run; changes are shown at the top.",
    )
    group.addoption(
        "--require-all-stages",
        action="store_true",
        default=False,
        help="a stage the profile asks for but that cannot be judged here (a server that cannot be "
        "reproduced offline, no GPU on this host) makes the image 'could not be checked' (exit 2) instead "
        "of 'compatible, <stage> not checked' (exit 0).",
    )
    for part in PARTS.values():
        part.add_options(group)
    parser.addini("base_image_profile", "default profile for --base-image runs", default="")


PROFILE_ALIAS = "--profile"
# Plugins known to own PROFILE_ALIAS. A plugin registered before this one is seen in the parser; one registered
# after it would make argparse fail at start-up ("conflicting option string"), so it is looked for up front.
PROFILE_ALIAS_OWNERS = ("pytest_profiling",)


def profile_option_names(parser: pytest.Parser) -> tuple[str, ...]:
    """--base-image-profile always; the short --profile only when no other plugin has or will have it."""
    taken = {name for group in [*parser._groups, parser._anonymous] for opt in group.options for name in opt.names()}
    if PROFILE_ALIAS in taken or any(_installed(module) for module in PROFILE_ALIAS_OWNERS):
        return ("--base-image-profile",)
    return ("--base-image-profile", PROFILE_ALIAS)


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


# -- configuration ---------------------------------------------------------------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_cmdline_main(config: pytest.Config) -> Iterator[Any]:
    """Runs before xdist's own hook turns `-n` into --dist=load: images get --dist=loadgroup instead."""
    option = config.option
    if not hasattr(config, "workerinput") and hasattr(option, "dist"):
        choice = matrix.choose_dist(
            dist=option.dist,
            distload=bool(getattr(option, "distload", False)),
            numprocesses=getattr(option, "numprocesses", None),
            has_images=bool(option.base_images or option.base_image_matrix),
        )
        if choice.dist:
            option.dist = choice.dist
        if choice.warning:
            config.issue_config_time_warning(pytest.PytestConfigWarning(choice.warning), stacklevel=2)
    return (yield)


DIST_KEY = "baseimage_dist"  # workerinput: the controller's --dist, which workers cannot see in their args


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist workers re-parse the command line, so they would miss the loadgroup chosen above: pass it on."""
    node.workerinput[DIST_KEY] = node.config.option.dist
    # The controller built --base-image-dockerfile; workers must not build again.
    node.workerinput[registry.BUILT_KEY] = registry.built(node.config)


USAGE_KEY = pytest.StashKey[bool]()  # pytest_configure ran (and wrote the verdict of its own usage error)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.stash[USAGE_KEY] = True
    try:
        _configure(config)
    except pytest.UsageError as exc:
        if not hasattr(config, "workerinput"):
            write_usage_verdict(config.getoption("compat_json"), str(exc), config.getoption("base_images") or [])
        raise


def _verdict_after_parse_error(config: pytest.Config) -> None:
    """A value argparse refused (`--probe-timeout=0`, a bad `--pull` choice, an unknown option) stops pytest
    before pytest_configure; this runs in the config's cleanup while that UsageError unwinds. The options were
    not parsed, so --compat-json and --base-image are read from the command line as given."""
    error = sys.exc_info()[1]
    if not isinstance(error, pytest.UsageError) or config.stash.get(USAGE_KEY, False):
        return
    known = _parse_error_args(config)
    if known is None:
        return
    lines = [line for line in str(error).splitlines() if line.strip()]
    message = next((line.split(" error: ", 1)[1] for line in lines if " error: " in line), lines[-1] if lines else "")
    write_usage_verdict(known.compat_json, message, known.base_images or [])


def _parse_error_args(config: pytest.Config) -> argparse.Namespace | None:
    """--compat-json and --base-image from the invocation's arguments and PYTEST_ADDOPTS (not the ini's addopts)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--compat-json", default=None)
    parser.add_argument("--base-image", action="append", dest="base_images", default=[])
    args = [*shlex.split(os.environ.get("PYTEST_ADDOPTS", "")), *config.invocation_params.args]
    try:
        return parser.parse_known_args([str(arg) for arg in args])[0]
    except (SystemExit, ValueError):  # argparse exits on a missing value; shlex on an unclosed quote
        return None


def _configure(config: pytest.Config) -> None:
    for name in STAGE_ORDER:
        config.addinivalue_line("markers", f"{name}: the '{name}' compliance stage (select with -m {name})")
    if getattr(config, "workerinput", {}).get(DIST_KEY) == matrix.GROUPING_MODE:
        config.option.loadgroup = True  # what xdist's worker checks before adding @group to node ids
    session = VerdictSession(config, require_all=bool(config.getoption("require_all_stages")))
    config.stash[SESSION_KEY] = session
    config.pluginmanager.register(session, "baseimage-verdict")
    config.stash[CHECKS_KEY] = {}
    config.stash[TARGETS_KEY] = []
    controller = not hasattr(config, "workerinput")
    if controller and _asked_for_images(config):
        _check_output_paths(config)
    collect_only = bool(config.getoption("collectonly"))  # lists the stages; never touches the engine
    images = [*(config.getoption("base_images") or []), *([] if collect_only else _built_images(config))]
    if not images and not config.getoption("base_image_matrix"):
        return
    config.stash[TARGETS_KEY] = session.targets = build_targets(config, images)
    session.secrets = _secrets(config)
    install_signal_handlers()
    _add_suite(config)
    if controller and not collect_only:
        _preflight(config)


def _asked_for_images(config: pytest.Config) -> bool:
    option = config.option
    return bool(option.base_images or option.base_image_matrix or getattr(option, "base_image_dockerfile", None))


def _check_output_paths(config: pytest.Config) -> None:
    """Every report path is writable, and a baseline readable, before anything starts: else a usage error."""
    paths = [("--compat-json", config.getoption("compat_json")), ("--compat-html", config.getoption("compat_html"))]
    try:
        for option, path in paths:
            if path:
                check_output_path(option, path)
        if getattr(config.option, "xmlpath", None):  # pytest creates a missing directory for this one
            check_output_path("--junitxml", config.option.xmlpath, may_create_dirs=True)
        _check_baseline(config.getoption("compat_baseline"))
    except BaseImageError as exc:
        raise pytest.UsageError(escaped(str(exc))) from None


def _check_baseline(path: str | None) -> None:
    """The earlier verdict to compare with must be there and readable: a gate that asked for a comparison
    must not get a run without one."""
    if not path:
        return
    from .report import ReportError, load_json

    try:
        load_json(path)
    except ReportError as exc:
        raise ReportError(f"--compat-baseline={one_line(str(exc))}") from None


def build_targets(config: pytest.Config, images: list[str]) -> list[Target]:
    """One Target per distinct image (--base-image, --base-image-matrix); every part adds its options to each."""
    profile_ref = (
        config.getoption("base_image_profile") or config.getini("base_image_profile") or profiles.DEFAULT_PROFILE
    )
    try:
        options = {name: part.options_from_config(config) for name, part in PARTS.items()}
        found = matrix.entries(config.getoption("base_image_matrix"), images, matrix.part_schemas(PARTS))
        targets = matrix.targets(found, matrix.Settings(profile=profile_ref, options=options), profiles.load)
        for part in PARTS.values():  # e.g. registry: matrix refs must be pinned under --require-digest
            getattr(part, "validate_targets", lambda targets: None)(targets)
        return targets
    except BaseImageError as exc:
        raise pytest.UsageError(escaped(str(exc))) from None


# The parts of a check beyond the static stages. Each exports add_options(group) and
# options_from_config(config) (-> Target.options[name]), and registers its stage, if any, when imported.
PARTS: dict[str, Any] = {
    "scoring": scoring,
    "deployment": deployment,
    "gpu": gpu,
    "registry": registry,
    "probe": probe_options,
}


def _built_images(config: pytest.Config) -> list[str]:
    """--base-image-dockerfile: the controller builds (exit 2 and the log tail on failure); workers reuse its ids."""
    try:
        return registry.build_targets(config)
    except BaseImageError as exc:
        if exc.exit_code == ExitCode.USAGE_ERROR:
            raise pytest.UsageError(escaped(str(exc))) from None
        # One line, then the build log's tail: its own lines stay, each one inert (no CR can rewrite another).
        pytest.exit(inert_lines(str(exc)), returncode=int(exc.exit_code))


def _secrets(config: pytest.Config) -> list[str]:
    """Values every report must redact (the registry password)."""
    return registry.secrets(config)


def _add_suite(config: pytest.Config) -> None:
    """Collect the bundled suite when no paths were given (or always, if asked)."""
    mode = config.getoption("compliance_suite")
    explicit = config.args_source == pytest.Config.ArgsSource.ARGS
    suite = str(resources.files("pytest_baseimage.suites"))
    if mode == "always" or (mode == "auto" and not explicit):
        config.args = [*config.args, suite] if explicit else [suite]


def _preflight(config: pytest.Config) -> None:
    """Fail fast with one line when nothing can be checked: the engine is down or no image exists."""
    checks = config.stash[CHECKS_KEY]
    try:
        for target in config.stash[TARGETS_KEY]:
            engine_for(*target.engine_key)
            check = ImageCheck(target)
            check.prepare()
            checks[target.name] = check
    except BaseImageError as exc:
        _stop_unchecked(config, str(exc), exc.exit_code)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM during a pull: still a verdict file, marked interrupted
        _stop_unchecked(config, "interrupted before any stage ran", ExitCode.UNCHECKED, interrupted=True)
    if checks and all(check.error for check in checks.values()):
        _stop_unchecked(config, "; ".join(check.error for check in checks.values()), ExitCode.UNCHECKED)


def _stop_unchecked(config: pytest.Config, message: str, code: int, interrupted: bool = False) -> None:
    """Stop before the session, but write the reports first: a gate keeps a verdict for every run."""
    session = config.stash[SESSION_KEY]
    reports = session.image_reports(config.stash[CHECKS_KEY])
    for report in reports:
        report.error = report.error or message
    run = session.run_of(reports, Ending(interrupted=interrupted), _host_of(config))
    session.write_outputs(run)
    _write_junit_before_session(config, run, session.secrets)
    pytest.exit(one_line(message), returncode=int(code))


def _write_junit_before_session(config: pytest.Config, run: Any, secrets: Any) -> None:
    """pytest writes --junitxml at the session's end, which a run stopped in configure never reaches: write the
    same per-image suites (each image an error case) so a CI step that publishes test results finds them."""
    xml_path = getattr(config.option, "xmlpath", None)
    if not xml_path or hasattr(config, "workerinput"):
        return
    from .report.junit import to_junit_xml

    with contextlib.suppress(OSError):  # the path was checked before anything started
        Path(xml_path).write_text(to_junit_xml(run, secrets=secrets), encoding="utf-8")


def pytest_unconfigure(config: pytest.Config) -> None:
    for check in config.stash.get(CHECKS_KEY, {}).values():
        check.close()
    cleanup_all()
    xml_path = getattr(config.option, "xmlpath", None)
    if xml_path and config.stash.get(TARGETS_KEY, []) and not hasattr(config, "workerinput"):
        from .report.junit import split_by_image

        if os.path.exists(xml_path):
            split_by_image(xml_path, order=[t.name for t in config.stash[TARGETS_KEY]])


# -- parametrisation and fixtures --------------------------------------------------------------------------
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "baseimage" not in metafunc.fixturenames:
        return
    targets = metafunc.config.stash.get(TARGETS_KEY, [])
    if not targets:
        return
    metafunc.parametrize("baseimage", targets, ids=[t.name for t in targets], indirect=True, scope="session")


@pytest.hookimpl(tryfirst=True)  # before xdist's worker hook, which turns these marks into @group node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Keep one image's tests on one xdist worker (with --dist loadgroup): one container per image."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        target = callspec.params.get("baseimage") if callspec else None
        if isinstance(target, Target):
            item.add_marker(pytest.mark.xdist_group(name=f"baseimage:{target.name}"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Which stages each image will run (after -m/-k): live stages that read no facts may start early."""
    from .session import _stages_of

    selected: dict[str, set[str]] = {}
    for name, stage in _stages_of(session.items):
        selected.setdefault(name, set()).add(stage)
    session.config.stash[SELECTED_KEY] = selected


@pytest.fixture(scope="session")
def baseimage(request: pytest.FixtureRequest) -> Iterator[ImageCheck]:
    """The image under test (parametrised over every --base-image): facts, stage results, the container."""
    target = getattr(request, "param", None)
    if target is None:
        pytest.skip("no --base-image given")
    checks = request.config.stash[CHECKS_KEY]
    check = checks.get(target.name) or checks.setdefault(target.name, ImageCheck(target))
    check.selected = request.config.stash.get(SELECTED_KEY, {}).get(target.name, set())
    yield check
    check.close()


@pytest.fixture
def baseimage_host(baseimage: ImageCheck) -> Any:
    """A testinfra host inside the running candidate, for a team's own checks."""
    import testinfra

    baseimage.prepare()
    if baseimage.error:
        pytest.fail(f"could not check the image: {baseimage.error}", pytrace=False)
    if not baseimage.candidate.running:
        pytest.skip("the image cannot run a process (no sleep/shell), so testinfra cannot reach it")
    return testinfra.get_host(f"docker://{baseimage.candidate.id}")


@pytest.fixture
def stage_check(baseimage: ImageCheck, request: pytest.FixtureRequest) -> Any:
    """Run one stage on the image and turn its result into a pytest outcome with a one-line message."""

    def run(stage: str) -> StageResult:
        result = baseimage.result(stage)
        request.node.stash[RESULT_STASH] = (baseimage, result)
        for key, value in junit_properties(baseimage, result).items():
            request.node.user_properties.append((key, value))
        if result.status is Status.PASS:
            return result
        if result.status in (Status.BLOCKED, Status.SKIPPED):
            pytest.skip(one_line(result.reason))
        if result.status is Status.ERROR:
            pytest.fail(one_line(result.reason), pytrace=False)
        pytest.fail(result.summary(), pytrace=False)

    return run


RESULT_STASH = pytest.StashKey[tuple]()


# Stage details that CI dashboards chart or filter on; long ones (logs, tracebacks) stay in the HTML/JSON.
JUNIT_DETAIL_KEYS = ("cause", "boot_s", "score_latency_s", "server_version")


def junit_properties(check: ImageCheck, result: StageResult) -> dict[str, str]:
    properties = {
        "image": check.target.reference,
        "image_name": check.target.name,  # the key JSON and HTML group by; split_by_image groups by it too
        "image_id": check.info.image_id,
        "digest": check.info.digest,
        "profile": check.profile.name,
        "stage": result.stage,
        "status": result.status.value,
        "expected": one_line(result.expected),
        "observed": one_line(result.observed),
    }
    for key in JUNIT_DETAIL_KEYS:
        if result.details.get(key) not in (None, ""):
            properties[key] = one_line(str(result.details[key]))
    properties.update(deployment.junit_properties(result))
    return properties


# -- results travel on reports ----------------------------------------------------------------------------
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    stashed = item.stash.get(RESULT_STASH, None)
    if stashed is None or report.when != "call":
        return
    check, result = stashed
    payload = check.report()
    # The stage's own result, and those of prerequisites it ran that -k/-m left out: a stage blocked by
    # a deselected one must still show the failure that blocked it.
    payload.results = [r for r in payload.results if r.stage == result.stage or r.stage not in check.selected]
    setattr(report, REPORT_ATTR, payload.to_dict())


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The exit code a gate reads (0/1/2, see errors.ExitCode) and the reports, from the same results."""
    config = session.config
    verdicts = config.stash.get(SESSION_KEY, None)
    if hasattr(config, "workerinput") or verdicts is None or not verdicts.targets:
        return
    reports = verdicts.image_reports(config.stash.get(CHECKS_KEY, {}))
    ending = Ending()
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        ending = Ending(nothing_selected=True, message=_nothing_selected(config))
    elif exitstatus not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        # interrupted, internal error: a verdict the run did not reach must not be written as one
        ending = Ending(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)
        for report in reports:
            report.error = report.error or f"the run stopped before every stage ran (pytest exit {int(exitstatus)})"
    else:
        # An image none of whose tests ran (-k/-m left out all its stages; under xdist the controller never
        # sees the deselection) was not part of this run, as if it had not been named: it gets no verdict.
        reports = [r for r in reports if r.results or r.error]
        if not reports:
            return
    verdicts.final = reports
    run = verdicts.run_of(reports, ending, _host_of(config))
    if exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        # The worse of the two: a user's own failing test still fails the run; an unchecked image makes it 2.
        session.exitstatus = max(int(exitstatus), int(run.exit_code))
    if exitstatus == pytest.ExitCode.INTERNAL_ERROR:
        return  # no verdict is better than a wrong one
    verdicts.write_outputs(run)


def _nothing_selected(config: pytest.Config) -> str:
    """Why pytest's exit 5 here: no stage of the compliance suite was selected."""
    stages = ", ".join(STAGE_ORDER)
    if config.getoption("keyword") or config.getoption("markexpr"):
        return f"nothing selected: -k/-m left none of the stages ({stages}) to run; nothing was judged"
    return f"nothing selected: no compliance stage was collected for the images ({stages}); nothing was judged"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if hasattr(config, "workerinput"):
        return
    verdicts = config.stash.get(SESSION_KEY, None)
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and verdicts is not None:
        if verdicts.targets:
            terminalreporter.write_line(f"pytest-baseimage: {_nothing_selected(config)} (exit 5)", yellow=True)
        elif config.getoption("compliance_suite") == "always":
            terminalreporter.write_line(
                "pytest-baseimage: nothing to check: --compliance-suite=always needs --base-image=IMAGE or "
                "--base-image-matrix=FILE (exit 5)",
                yellow=True,
            )
    if verdicts is None or not verdicts.targets or config.getoption("collectonly"):
        return
    reports = verdicts.final if verdicts.final is not None else verdicts.image_reports(config.stash.get(CHECKS_KEY, {}))
    if not any(r.results or r.error for r in reports):
        return
    terminalreporter.section("base image verdict")
    for line, markup in verdicts.summary_lines(reports):
        terminalreporter.write_line(line, **markup)
    for option, label in (("compat_json", "JSON verdict"), ("compat_html", "HTML report")):
        if config.getoption(option) and verdicts.written:
            terminalreporter.write_line(f"{label}: {os.path.abspath(config.getoption(option))}")


def _host_of(config: pytest.Config) -> str:
    hosts = set()
    for target in config.stash[TARGETS_KEY]:
        try:
            hosts.add(engine_for(*target.engine_key).host)
        except BaseImageError:
            hosts.add(target.docker_host or os.environ.get("DOCKER_HOST", "") or "unreachable")
    return ", ".join(sorted(hosts))
