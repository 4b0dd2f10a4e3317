"""JUnit XML for a (merged) run: one <testsuite> per image, so CI dashboards group results by image.

Status mapping: fail -> <failure>, error -> <error>, skipped -> <skipped>, and blocked -> <skipped
type="blocked">: the stage did not run because a prerequisite did not pass, and that prerequisite is
already counted as the failure, so counting its dependents again would only add noise.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from pytest_baseimage.report.model import Run, sanitized
from pytest_baseimage.report.safety import tail
from pytest_baseimage.results import ImageReport, StageResult, Status
from pytest_baseimage.text import inert_lines, one_line

# pytest-xdist's loadgroup appends "@<group>" to test names; CI tabs should show the plain name.
_XDIST_GROUP = re.compile(r"@baseimage:.*$")

WAIVER_KEYS = ("justification", "owner", "expires", "message")  # the same properties the plugin's JUnit has
_ELEMENT = {
    Status.FAIL: "failure",
    Status.ERROR: "error",
    Status.SKIPPED: "skipped",
    Status.BLOCKED: "skipped",
    Status.WAIVED: "skipped",  # plus the waiver's properties: see evidence.junit_properties
}


def to_junit_xml(run: Run, *, secrets: Sequence[str] = ()) -> str:
    """The run as a JUnit XML document (UTF-8 declared); strings are sanitised, secrets redacted."""
    run = sanitized(run, secrets)
    root = ET.Element("testsuites", name="baseimage", tests="0", failures="0", errors="0", skipped="0")
    totals = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for image in run.images:
        suite = _suite(image, run)
        root.append(suite)
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
    for key, value in totals.items():
        root.set(key, str(value))
    root.set("time", _time(sum(float(s.get("time", "0")) for s in root)))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _suite(image: ImageReport, run: Run) -> ET.Element:
    suite = ET.Element("testsuite", name=image.name)
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("verdict", image.verdict.value),
        ("plugin_version", run.plugin_version),
        ("host", run.host),
    ):
        ET.SubElement(props, "property", name=name, value=value)
    cases = [_case(image, result) for result in image.results]
    if image.error:
        cases.append(_image_error_case(image))
    suite.extend(cases)
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", str(sum(1 for c in cases if c.find("error") is not None)))
    suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
    suite.set("time", _time(sum(r.duration_s for r in image.results)))
    if run.started:
        suite.set("timestamp", run.started)
    if run.host:
        suite.set("hostname", run.host)
    return suite


def _case(image: ImageReport, result: StageResult) -> ET.Element:
    case = ET.Element(
        "testcase",
        classname=f"baseimage.{image.name}",
        name=f"test_{result.stage}",
        time=_time(result.duration_s),
    )
    props = ET.SubElement(case, "properties")
    for name, value in (
        ("image", image.info.reference or image.name),
        ("image_id", image.info.image_id),
        ("digest", image.info.digest),
        ("profile", image.profile),
        ("stage", result.stage),
        ("status", result.status.value),
        ("expected", one_line(result.expected)),
        ("observed", one_line(result.observed)),
        *((f"waiver_{key}", one_line(str(result.waiver[key]))) for key in WAIVER_KEYS if result.waiver.get(key)),
    ):
        ET.SubElement(props, "property", name=name, value=value)
    tag = _ELEMENT.get(result.status)
    if tag is not None:
        outcome = ET.SubElement(case, tag, message=result.summary())
        outcome.set("type", result.status.value)
        if result.status is Status.FAIL:
            outcome.text = _failure_text(result)
    if result.details and result.status in (Status.FAIL, Status.ERROR):
        ET.SubElement(case, "system-out").text = _details_text(result)
    return case


def _image_error_case(image: ImageReport) -> ET.Element:
    """An image that could not be checked at all still needs a red entry, or CI would see zero tests."""
    case = ET.Element("testcase", classname=f"baseimage.{image.name}", name="test_image", time="0.000")
    ET.SubElement(case, "error", message=one_line(image.error), type="image")
    return case


def _failure_text(result: StageResult) -> str:
    lines = [f"expected: {one_line(result.expected)}", f"observed: {one_line(result.observed)}"]
    if result.remediation:
        lines.append(f"fix: {one_line(result.remediation)}")
    return "\n".join(lines)


def _details_text(result: StageResult) -> str:
    """The stage's details (server log, traceback, ...) for the CI log view, each cut to its last lines."""
    parts = []
    for key, value in result.details.items():
        text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str)
        parts.append(f"--- {one_line(key)} ---\n{inert_lines(tail(text))}")
    return "\n".join(parts)


def _time(seconds: float) -> str:
    return f"{seconds:.3f}"


def split_by_image(path: str, order: Sequence[str] = ()) -> None:
    """Regroup pytest's own JUnit file into one <testsuite> per image (its display name), in `order`.

    pytest writes a single testsuite; CI test tabs read far better with one per image. Test cases keep
    pytest's content; only the grouping, the counts, and xdist's "@group" suffix on names change.
    """
    tree = ET.parse(path)
    root = tree.getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    if not suites:
        return
    template = suites[0]
    grouped: dict[str, list[ET.Element]] = {}
    rest: list[ET.Element] = []
    for suite in suites:
        for case in list(suite.findall("testcase")):
            image = _image_key(case)
            (grouped.setdefault(image, []) if image else rest).append(case)
            case.set("name", _XDIST_GROUP.sub("", case.get("name", "")))
    if not grouped:
        return
    rank = {name: index for index, name in enumerate(order)}
    grouped = dict(sorted(grouped.items(), key=lambda item: rank.get(item[0], len(rank))))
    new_root = ET.Element("testsuites", name=root.get("name", "pytest tests"))
    for name, cases in [*grouped.items(), *([("pytest", rest)] if rest else [])]:
        suite = ET.SubElement(new_root, "testsuite", {k: v for k, v in template.attrib.items() if k != "name"})
        suite.set("name", name)
        for case in cases:
            suite.append(case)
        _count(suite)
    ET.ElementTree(new_root).write(path, encoding="utf-8", xml_declaration=True)


def _image_key(case: ET.Element) -> str | None:
    """The image's display name (the key JSON and HTML group by), else its reference (older plugins)."""
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    return props.get("image_name") or props.get("image")


def _count(suite: ET.Element) -> None:
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    for attr, tag in (("failures", "failure"), ("errors", "error"), ("skipped", "skipped")):
        suite.set(attr, str(sum(1 for case in cases if case.find(tag) is not None)))
    suite.set("time", _time(sum(float(case.get("time", "0")) for case in cases)))
