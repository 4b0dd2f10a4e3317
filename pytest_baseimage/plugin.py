"""The pytest hooks: thin. Options in, Targets out; results travel on test reports (so xdist works) and
come back together at the end for the verdict, the exit code and the reports."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from . import deployment, evidence, gpu, hookspecs, matrix, options, probe_options, profiles, scoring, usage
from .composition import BUILTIN, Composition
from .engine import Engine
from .engines import EngineFactory, Engines
from .errors import BaseImageError, ExitCode
from .registry import plugin as registry_part
from .results import StageResult, Status
from .session import (
    DESELECTED_OUTPUT,
    PLUGIN_NAME,
    REPORT_ATTR,
    Ending,
    VerdictSession,
    merge_result,
    write_usage_verdict,
)
from .signals import install_signal_handlers
from .suite import add_stage_tests, composition_of, is_suite
from .target import ImageCheck, Target, drop_unneeded
from .text import escaped, inert_lines, one_line

TARGETS_KEY = pytest.StashKey[list]()
CHECKS_KEY = pytest.StashKey[dict]()
SELECTED_KEY = pytest.StashKey[dict]()
SESSION_KEY = pytest.StashKey[VerdictSession]()
# How this run reaches an engine: Engine (the Docker SDK) unless a plugin put another factory here before
# pytest_configure (the in-process tests put a fake engine's, see tests/fake_engine.py).
ENGINE_FACTORY_KEY = pytest.StashKey[EngineFactory]()
COMPOSITION_KEY = pytest.StashKey[Composition]()
__all__ = ["REPORT_ATTR", "merge_result"]  # re-exported: tests reach the merge through this module


# -- options -------------------------------------------------------------------------------------------
def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """pytest_baseimage_stages: how another plugin adds a stage (see hookspecs.py)."""
    pluginmanager.add_hookspecs(hookspecs)


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    config = pluginmanager.get_plugin("pytestconfig")
    if config is not None:  # argparse's errors end the run before pytest_configure: a cleanup still sees them
        config.add_cleanup(lambda: usage.verdict_after_parse_error(config))
    group = parser.getgroup("baseimage", "base image compliance (pytest-baseimage)")
    options.add_core_options(parser, group)
    for part in PARTS.values():
        part.add_options(group)
    parser.addini("base_image_profile", "default profile for --base-image runs", default="")


# -- configuration ---------------------------------------------------------------------------------------
DIST_WARNING_KEY = pytest.StashKey[str]()


def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """-n with images: --dist=loadgroup unless the user picked a mode, added to the arguments as if typed. xdist
    workers re-parse the same arguments and come to the same choice, so they add @group to node ids too."""
    known = early_config.known_args_namespace
    if not hasattr(known, "dist"):  # no pytest-xdist
        return
    choice = matrix.choose_dist(
        dist=known.dist,
        distload=bool(getattr(known, "distload", False)),
        numprocesses=getattr(known, "numprocesses", None),
        has_images=bool(getattr(known, "base_images", None) or getattr(known, "base_image_matrix", None)),
    )
    if choice.dist:
        args.insert(0, f"--dist={choice.dist}")  # before any `--`, after which it would be a path
    early_config.stash[DIST_WARNING_KEY] = choice.warning


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Workers start from the controller's arguments and the workerinput it gives them."""
    # The controller built --base-image-dockerfile; workers must not build again.
    node.workerinput[registry_part.BUILT_KEY] = registry_part.built(node.config)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist: the controller collects nothing, so each worker's deselected stages come back with it."""
    session = node.config.stash.get(SESSION_KEY, None)
    if session is not None:
        session.add_deselected(getattr(node, "workeroutput", {}).get(DESELECTED_OUTPUT) or {})


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    config.stash[usage.USAGE_KEY] = True
    try:
        _configure(config)
    except pytest.UsageError as exc:
        if not hasattr(config, "workerinput"):
            images = config.getoption("base_images") or []
            write_usage_verdict(config.getoption("compat_json"), str(exc), images, config.invocation_params.args)
        raise


def _configure(config: pytest.Config) -> None:
    stages = config.stash[COMPOSITION_KEY] = composition_of(config)
    for name in stages.names:
        config.addinivalue_line("markers", f"{name}: the '{name}' compliance stage (select with -m {name})")
    warning = config.stash.get(DIST_WARNING_KEY, "")
    if warning and not hasattr(config, "workerinput"):
        config.issue_config_time_warning(pytest.PytestConfigWarning(warning), stacklevel=2)
    engines = Engines(config.stash.get(ENGINE_FACTORY_KEY, Engine))
    require_all = bool(config.getoption("require_all_stages"))
    session = VerdictSession(config, require_all=require_all, engines=engines, composition=stages)
    config.stash[SESSION_KEY] = session
    config.pluginmanager.register(session, PLUGIN_NAME)
    config.stash[CHECKS_KEY] = {}
    config.stash[TARGETS_KEY] = []
    controller = not hasattr(config, "workerinput")
    if controller and _asked_for_images(config):
        usage.check_output_paths(config)
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
    "registry": registry_part,
    "probe": probe_options,
    "waivers": evidence,  # waivers and attestations: the gate's evidence
}


def _built_images(config: pytest.Config) -> list[str]:
    """--base-image-dockerfile: the controller builds (exit 2 and the log tail on failure); workers reuse its ids."""
    try:
        return registry_part.build_targets(config)
    except BaseImageError as exc:
        if exc.exit_code == ExitCode.USAGE_ERROR:
            raise pytest.UsageError(escaped(str(exc))) from None
        # One line, then the build log's tail: its own lines stay, each one inert (no CR can rewrite another).
        pytest.exit(inert_lines(str(exc)), returncode=int(exc.exit_code))


def _secrets(config: pytest.Config) -> list[str]:
    """Values every report must redact (the registry password)."""
    return registry_part.secrets(config)


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
    engines = config.stash[SESSION_KEY].engines
    distributed = bool(getattr(config.option, "numprocesses", None)) and getattr(config.option, "dist", "no") != "no"
    try:
        for target in config.stash[TARGETS_KEY]:
            engines.get(*target.engine_key)
            check = _new_check(config, target)
            check.prepare(warm=not distributed)  # xdist's workers run the stages, on checks of their own
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
    session = config.stash.get(SESSION_KEY, None)
    try:
        for check in config.stash.get(CHECKS_KEY, {}).values():
            check.close()
        if session is not None:  # the session's engines remove what they started: Ctrl-C and SIGTERM end here too
            session.engines.cleanup()
        xml_path = getattr(config.option, "xmlpath", None)
        if xml_path and config.stash.get(TARGETS_KEY, []) and not hasattr(config, "workerinput"):
            from .report.junit import split_by_image

            if os.path.exists(xml_path):
                split_by_image(xml_path, order=[t.name for t in config.stash[TARGETS_KEY]])
    finally:
        if session is not None:
            session.late.release()


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session: pytest.Session) -> Iterator[Any]:
    """Once the tests have run, a first Ctrl-C or SIGTERM waits for the ending (see signals.LateSignals)."""
    try:
        return (yield)
    finally:
        verdicts = session.config.stash.get(SESSION_KEY, None)
        if verdicts is not None:
            verdicts.late.hold()


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
    for name, stage in _stages_of(session.items, _composition(session.config).names):
        selected.setdefault(name, set()).add(stage)
    session.config.stash[SELECTED_KEY] = selected
    checks = session.config.stash.get(CHECKS_KEY, {})
    for name, check in checks.items():  # made by the preflight (serial runs): before anything was selected
        check.selected = selected.get(name, set())
    for check in list(checks.values())[:1]:  # the first image's server boots now; a matrix's others at their turn
        check.begin()
    drop_unneeded(list(checks.values()))


def _composition(config: pytest.Config) -> Composition:
    return config.stash.get(COMPOSITION_KEY, BUILTIN)


def _new_check(config: pytest.Config, target: Target) -> ImageCheck:
    check = ImageCheck(target, config.stash[SESSION_KEY].engines)
    check.composition = _composition(config)
    return check


@pytest.hookimpl(wrapper=True)
def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> Iterator[Any]:
    """The bundled suite gets one test per stage a plugin added (`test_<name>`, mark `<name>`), after its own."""
    module = yield
    if isinstance(module, pytest.Module) and is_suite(module_path):
        add_stage_tests(module.obj, _composition(parent.config))
    return module


@pytest.fixture(scope="session")
def baseimage(request: pytest.FixtureRequest) -> Iterator[ImageCheck]:
    """The image under test (parametrised over every --base-image): facts, stage results, the container."""
    target = getattr(request, "param", None)
    if target is None:
        pytest.skip("no --base-image given")
    checks = request.config.stash[CHECKS_KEY]
    check = checks.get(target.name) or checks.setdefault(target.name, _new_check(request.config, target))
    check.selected = request.config.stash.get(SELECTED_KEY, {}).get(target.name, set())
    yield check
    check.close(wait=False)  # the candidate goes beside the reports; the session's cleanup waits for it
    drop_unneeded(list(checks.values()))  # the last image done on an engine: its network goes too


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
        cause = baseimage.deselected_cause(stage) if result.status is Status.BLOCKED else None
        if cause is not None:  # the test fails as the verdict does, though the failing stage was left out
            why = f"{one_line(result.reason)} (left out by -k/-m), which failed: {cause.summary()}"
            pytest.fail(why, pytrace=False)
        if result.status in (Status.BLOCKED, Status.SKIPPED, Status.WAIVED):
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
    properties.update(evidence.junit_properties(result))
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
        # An image none of whose tests ran (-k/-m left out all its stages) gets no verdict, but is named as
        # not judged (`deselected_images`): a gate must not read a matrix's other images as all there was.
        verdicts.left_out = [r.name for r in reports if not (r.results or r.error)]
        reports = [r for r in reports if r.results or r.error]
        if not reports:
            return
    verdicts.final = reports
    run = verdicts.run_of(reports, ending, _host_of(config))
    if exitstatus != pytest.ExitCode.INTERNAL_ERROR:  # waiver notes; attestations (one not stored: exit 2)
        evidence.finish(config, verdicts.targets, run, list(verdicts.secrets))
    if exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        # The worse of the two: a user's own failing test still fails the run; an unchecked image makes it 2.
        session.exitstatus = max(int(exitstatus), int(run.exit_code))
    if exitstatus == pytest.ExitCode.INTERNAL_ERROR:
        return  # no verdict is better than a wrong one
    verdicts.write_outputs(run)


def _nothing_selected(config: pytest.Config) -> str:
    """Why pytest's exit 5 here: no stage of the compliance suite was selected."""
    stages = ", ".join(_composition(config).names)
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
        note = usage.no_verdict_note(config, verdicts.written or exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED)
        if note:
            terminalreporter.write_line(note, yellow=True)
        return
    terminalreporter.section("base image verdict")
    for line, markup in [*verdicts.summary_lines(reports), *evidence.summary_lines(config)]:
        terminalreporter.write_line(line, **markup)
    for option, label in (("compat_json", "JSON verdict"), ("compat_html", "HTML report")):
        if config.getoption(option) and verdicts.written:
            terminalreporter.write_line(f"{label}: {os.path.abspath(config.getoption(option))}")


def _host_of(config: pytest.Config) -> str:
    hosts = set()
    engines = config.stash[SESSION_KEY].engines
    for target in config.stash[TARGETS_KEY]:
        try:
            hosts.add(engines.get(*target.engine_key).host)
        except BaseImageError:
            hosts.add(target.docker_host or os.environ.get("DOCKER_HOST", "") or "unreachable")
    return ", ".join(sorted(hosts))
