"""The report package: HTML, JSON, JUnit and merge, all rendered from stored results built here."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from pytest_baseimage.composition import STAGE_ORDER
from pytest_baseimage.errors import ExitCode
from pytest_baseimage.report import (
    ReportError,
    Run,
    load_json,
    merge,
    redact,
    render_html,
    strip_ansi,
    to_junit_xml,
    write_html,
    write_json,
)
from pytest_baseimage.report.cli import main
from pytest_baseimage.report.diff import diff_facts
from pytest_baseimage.report.html import human_size
from pytest_baseimage.results import ImageInfo, ImageReport, StageResult, Status, Verdict

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "pytest_baseimage" / "report" / "schema.json"
HOSTILE = "<script>alert(1)</script>"
SECRET = "s3cr3t-Pa55word"


# ---------------------------------------------------------------- stored results


def good_image(name: str = "mcr.microsoft.com/azureml/minimal-ubuntu22.04-py39-cpu-inference:latest") -> ImageReport:
    """Every stage passes; the GPU stage is skipped on a CPU host."""
    results = [
        StageResult(stage, Status.PASS, f"{stage} ok", f"{stage} found", duration_s=0.5) for stage in STAGE_ORDER
    ]
    results[STAGE_ORDER.index("gpu")] = StageResult("gpu", Status.SKIPPED, reason="no GPU on this host")
    return ImageReport(
        name=name,
        info=ImageInfo(
            reference=name,
            image_id="sha256:" + "a" * 64,
            digest=name.split(":")[0] + "@sha256:" + "b" * 64,
            size_bytes=1_234_567_890,
            created="2024-05-01T10:00:00Z",
            architecture="amd64",
            user="dockeruser",
        ),
        profile="azureml-current",
        results=results,
        facts={
            "os": {"id": "ubuntu", "version_id": "22.04", "pretty_name": "Ubuntu 22.04.4 LTS"},
            "python": "3.9.19",
            "conda": "23.7.4",
            "pip": {"numpy": "1.26.4", "azureml-inference-server-http": "1.3.2"},
            "apt": {"nginx-light": "1.18.0-6ubuntu14", "runit": "2.1.2-41"},
        },
    )


def mixed_image(name: str = "python:3.11-slim") -> ImageReport:
    """pass, fail with remediation, error, blocked and skipped: every status at least once."""
    log = "\n".join(f"server log line {i}" for i in range(300))
    return ImageReport(
        name=name,
        info=ImageInfo(reference=name, image_id="sha256:" + "c" * 64, size_bytes=130_000_000),
        profile="azureml-current",
        results=[
            StageResult("os", Status.PASS, "debian >=11", "debian 12", duration_s=0.2),
            StageResult(
                "conda",
                Status.FAIL,
                "conda on PATH",
                "not found",
                remediation="install miniconda into /opt/conda",
                duration_s=0.1,
            ),
            StageResult("python", Status.PASS, ">=3.8", "3.11.9"),
            StageResult(
                "apt",
                Status.ERROR,
                reason="dpkg-query exited 2",
                details={"traceback": "Traceback (most recent call last):\nRuntimeError: boom", "exit_code": 2},
            ),
            StageResult("azureml", Status.BLOCKED, reason="blocked by python"),
            StageResult("scoring", Status.BLOCKED, reason="blocked by azureml", details={"log": log}),
            StageResult("deployment", Status.SKIPPED, reason="not required by profile azureml-current"),
            StageResult("gpu", Status.SKIPPED, reason="no GPU on this host"),
        ],
        facts={"os": "Debian GNU/Linux 12 (bookworm)", "python": "3.11.9", "pip": {"pip": "24.0", "numpy": "1.26.0"}},
    )


def make_run(*images: ImageReport, started: str = "2024-06-02T10:00:00+00:00") -> Run:
    return Run(
        images=list(images),
        plugin_version="0.1.0",
        started=started,
        finished=started.replace("10:00:00", "10:03:12"),
        host="unix:///var/run/docker.sock",
        argv=["pytest", "--base-image=python:3.11-slim"],
    )


@pytest.fixture
def mixed_run() -> Run:
    return make_run(good_image(), mixed_image())


# ---------------------------------------------------------------- a small DOM over html.parser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        return " ".join(" ".join(c.text() if isinstance(c, Node) else c for c in self.children).split())

    def iter(self):
        for child in self.children:
            if isinstance(child, Node):
                yield child
                yield from child.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Node]:
        return [
            n
            for n in self.iter()
            if (tag is None or n.tag == tag)
            and (cls is None or cls in n.classes)
            and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, cls, **attrs)
        assert found, f"no <{tag} class={cls} {attrs}>"
        return found[0]

    def by_id(self, element_id: str) -> Node:
        return self.find(id=element_id)


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = self.current = Node("#document", {}, None)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_endtag(self, tag: str) -> None:
        node = self.current
        while node.parent is not None and node.tag != tag:
            node = node.parent
        if node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.children.append(data)


def parse_html(text: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


# ---------------------------------------------------------------- verdicts and exit codes


def test_run_verdict_is_the_worst_image(mixed_run: Run) -> None:
    assert mixed_run.images[0].verdict is Verdict.COMPATIBLE
    assert mixed_run.images[1].verdict is Verdict.UNCHECKED  # an error stage wins over the failure
    assert mixed_run.verdict is Verdict.UNCHECKED
    assert mixed_run.exit_code == ExitCode.UNCHECKED


@pytest.mark.parametrize(
    ("statuses", "verdict", "code"),
    [
        ([Status.PASS], Verdict.COMPATIBLE, 0),
        ([Status.PASS, Status.FAIL], Verdict.NOT_COMPATIBLE, 1),
        ([Status.BLOCKED], Verdict.NOT_COMPATIBLE, 1),
        ([Status.FAIL, Status.ERROR], Verdict.UNCHECKED, 2),
    ],
)
def test_exit_code_follows_the_verdict(statuses: list[Status], verdict: Verdict, code: int) -> None:
    second = good_image("other:1")
    second.results = [StageResult(STAGE_ORDER[i], s, reason="r") for i, s in enumerate(statuses)]
    run = make_run(good_image(), second)
    assert (run.verdict, int(run.exit_code)) == (verdict, code)
    assert json.loads(json.dumps(run.to_dict()))["exit_code"] == code


def test_a_run_without_images_could_not_be_checked() -> None:
    assert make_run().verdict is Verdict.UNCHECKED
    assert make_run().exit_code == ExitCode.UNCHECKED


# ---------------------------------------------------------------- HTML


def test_html_has_a_matrix_linking_to_each_stage_row(mixed_run: Run) -> None:
    dom = parse_html(render_html(mixed_run))
    matrix = dom.by_id("matrix")
    rows = matrix.find("tbody").find_all("tr")
    assert [r.attrs["data-image"] for r in rows] == [i.name for i in mixed_run.images]
    cells = matrix.find_all("td", cls="cell", data_image="python:3.11-slim")
    assert [c.attrs["data-stage"] for c in cells] == list(STAGE_ORDER)
    statuses = {c.attrs["data-stage"]: c.attrs["data-status"] for c in cells}
    assert statuses == {
        "os": "pass",
        "conda": "fail",
        "python": "pass",
        "apt": "error",
        "azureml": "blocked",
        "scoring": "blocked",
        "deployment": "skipped",
        "gpu": "skipped",
    }
    for cell in cells:
        assert f"status-{cell.attrs['data-status']}" in cell.classes
        link = cell.find("a")
        assert link.attrs["href"] == f"#img-1-{cell.attrs['data-stage']}"
        target = dom.by_id(link.attrs["href"][1:])
        assert target.tag == "tr" and target.attrs["data-stage"] == cell.attrs["data-stage"]


def test_html_image_sections_show_verdict_metadata_and_stages(mixed_run: Run) -> None:
    dom = parse_html(render_html(mixed_run))
    sections = dom.find_all("section", cls="image")
    assert [(s.attrs["id"], s.attrs["data-verdict"]) for s in sections] == [
        ("img-0", "compatible"),
        ("img-1", "could not be checked"),
    ]
    good, mixed = sections
    assert "verdict-compatible" in good.find(cls="banner").classes
    assert good.find(cls="banner").find(cls="verdict-text").text() == "compatible"
    meta = {dt.text(): dt.parent.find("dd").text() for dt in good.find("dl").find_all("dt")}
    assert meta["size"] == "1.1 GiB"
    assert meta["digest"].endswith("@sha256:" + "b" * 64)
    assert meta["image id"] == "sha256:" + "a" * 64
    assert meta["OS"] == "Ubuntu 22.04.4 LTS"
    assert meta["profile"] == "azureml-current"
    assert meta["plugin version"] == "0.1.0"
    assert meta["created"] == "2024-05-01T10:00:00Z"

    rows = mixed.find_all("tr", cls="stage")
    assert [r.attrs["data-stage"] for r in rows] == list(STAGE_ORDER)
    conda = mixed.by_id("img-1-conda")
    assert "status-fail" in conda.classes
    assert conda.find(cls="expected").text() == "conda on PATH"
    assert conda.find(cls="observed").text() == "not found"
    assert conda.find(cls="remediation").text() == "install miniconda into /opt/conda"
    assert mixed.by_id("img-1-azureml").find(cls="reason").text() == "blocked by python"
    assert mixed.by_id("img-1-gpu").find(cls="reason").text() == "no GPU on this host"
    assert mixed.by_id("img-1-apt").find(cls="badge").text() == "⚠ error"


def test_html_run_header(mixed_run: Run) -> None:
    dom = parse_html(render_html(mixed_run))
    header = dom.by_id("run")
    assert header.attrs["data-verdict"] == "could not be checked"
    assert header.attrs["data-exit-code"] == "2"
    assert "verdict-unchecked" in dom.by_id("run-verdict").classes
    text = header.text()
    assert "unix:///var/run/docker.sock" in text and "3 min 12 s" in text and "0.1.0" in text


def test_html_details_are_generic_and_logs_keep_their_end(mixed_run: Run) -> None:
    dom = parse_html(render_html(mixed_run))
    apt_details = dom.find("tr", cls="details-row", data_stage="apt")
    traceback = apt_details.find("details", data_key="traceback")
    assert "RuntimeError: boom" in traceback.find("pre").text()
    assert apt_details.find(cls="inline", data_key="exit_code").find("code").text() == "2"
    log = dom.find("tr", cls="details-row", data_stage="scoring").find("details", data_key="log").find("pre").text()
    assert "server log line 299" in log
    assert "server log line 0 " not in log + " "  # the start of a long log is cut, the end is kept
    assert "100 earlier lines cut" in log


def test_html_is_self_contained(mixed_run: Run) -> None:
    text = render_html(mixed_run)
    dom = parse_html(text)
    assert not dom.find_all("script") and not dom.find_all("link") and not dom.find_all("img")
    assert dom.find("style").text()
    for node in dom.iter():
        for attr in ("href", "src"):
            assert not node.attrs.get(attr, "#").startswith(("http:", "https:", "//")), node.attrs
    assert "Content-Security-Policy" in text


def test_html_shows_an_image_that_could_not_be_checked() -> None:
    broken = ImageReport("ghcr.io/acme/missing:1", ImageInfo("ghcr.io/acme/missing:1"), "base", error="not found")
    dom = parse_html(render_html(make_run(good_image(), broken)))
    section = dom.by_id("img-1")
    assert section.attrs["data-verdict"] == "could not be checked"
    assert "not found" in section.find(cls="image-error").text()
    cells = dom.by_id("matrix").find_all("td", cls="cell", data_image="ghcr.io/acme/missing:1")
    assert {c.attrs["data-status"] for c in cells} == {"none"}


def test_human_size() -> None:
    assert [human_size(n) for n in (0, 1023, 1024, 130_000_000, 1_234_567_890)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "124.0 MiB",
        "1.1 GiB",
    ]


def test_write_html(mixed_run: Run, tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    write_html(mixed_run, path)
    assert path.read_text(encoding="utf-8") == render_html(mixed_run)


# ---------------------------------------------------------------- JSON and its schema


def test_json_round_trip(mixed_run: Run, tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    write_json(mixed_run, path)
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["schema_version"] == 1
    assert data["verdict"] == "could not be checked" and data["exit_code"] == 2
    loaded = load_json(path)
    assert loaded.to_dict() == mixed_run.to_dict() == data


def _walk(schema: dict[str, Any], value: Any, where: str, root: dict[str, Any]) -> int:
    """Follow the schema's required lists (and refs, items, types) through a produced document."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    kinds = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "null": type(None),
    }
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        assert isinstance(value, tuple(kinds[t] for t in types)), f"{where}: not {schema['type']}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    if "const" in schema:
        assert value == schema["const"], where
    checked = 0
    for key in schema.get("required", []):
        assert key in value, f"{where}: missing required {key!r}"
        checked += 1
    for key, sub in schema.get("properties", {}).items():
        if key in value:
            assert "description" in sub or "$ref" in sub, f"{where}.{key}: undocumented"
            checked += _walk(sub, value[key], f"{where}.{key}", root)
    if "items" in schema:
        for i, item in enumerate(value):
            checked += _walk(schema["items"], item, f"{where}[{i}]", root)
    return checked


def test_json_matches_the_schemas_required_keys_and_types(mixed_run: Run) -> None:
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    broken = ImageReport("x", ImageInfo("x"), "base", error="pull failed")
    data = json.loads(json.dumps(make_run(*mixed_run.images, broken).to_dict()))
    assert _walk(schema, data, "$", schema) > 100
    for name, definition in schema["$defs"].items():
        assert definition.get("description"), f"$defs.{name} has no description"


def test_json_validates_with_jsonschema(mixed_run: Run) -> None:
    import jsonschema  # a test dependency (the [test] extra)

    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(json.loads(json.dumps(mixed_run.to_dict())))


def test_schema_is_shipped_as_package_data() -> None:
    from importlib import resources

    text = resources.files("pytest_baseimage.report").joinpath("schema.json").read_text(encoding="utf-8")
    assert json.loads(text)["properties"]["schema_version"]["const"] == 1


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"images": []}', "no schema_version"),
        ('{"schema_version": 2, "images": []}', "unsupported schema_version 2"),
        ('{"schema_version": 1}', "missing key 'images'"),
        ('{"schema_version": 1, "images": [{"name": "x"}]}', "missing key"),
        (
            '{"schema_version": 1, "images": [{"name": "x", "info": {"reference": "x"}, "profile": "p",'
            ' "results": [{"stage": "os", "status": "great"}]}]}',
            "malformed report",
        ),
    ],
)
def test_load_json_refuses_bad_files_with_one_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ReportError) as caught:
        load_json(path)
    assert isinstance(caught.value, ValueError)
    assert message in str(caught.value) and str(path) in str(caught.value)
    assert "\n" not in str(caught.value)


def test_load_json_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="cannot read"):
        load_json(tmp_path / "nope.json")


# ---------------------------------------------------------------- merge


def test_merge_concatenates_and_keeps_the_later_duplicate() -> None:
    early = make_run(good_image("a:1"), mixed_image("b:1"), started="2024-06-02T10:00:00+00:00")
    late = make_run(good_image("b:1"), good_image("c:1"), started="2024-06-02T11:00:00+00:00")
    late.finished = "2024-06-02T12:30:00+00:00"
    late.host = "tcp://gpu-runner:2376"
    merged = merge([late, early])  # given out of order: the later start still wins
    assert [i.name for i in merged.images] == ["b:1", "c:1", "a:1"]
    assert merged.images[0].verdict is Verdict.COMPATIBLE  # b:1 from the later run
    assert merged.started == "2024-06-02T10:00:00+00:00"
    assert merged.finished == "2024-06-02T12:30:00+00:00"
    assert merged.host == "tcp://gpu-runner:2376, unix:///var/run/docker.sock"
    assert any("'b:1' appears 2 times" in note for note in merged.notes)
    assert merged.verdict is Verdict.COMPATIBLE
    assert "appears 2 times" in parse_html(render_html(merged)).by_id("run").text()


def test_merge_ties_go_to_the_later_run_given() -> None:
    first, second = make_run(mixed_image("a:1")), make_run(good_image("a:1"))
    assert merge([first, second]).images[0].verdict is Verdict.COMPATIBLE
    assert merge([second, first]).images[0].verdict is Verdict.UNCHECKED


def test_merge_of_one_run_is_that_run(mixed_run: Run) -> None:
    assert merge([mixed_run]).to_dict() == mixed_run.to_dict()


def test_merge_with_a_run_that_stopped_on_bad_input_is_not_green() -> None:
    """A fan-out job that had a typo (exit 4) checked none of its images: they are "could not be checked" in
    the merge, with that job's one line, not left out of a verdict that would then read compatible."""
    typo = Run(usage_error="unknown profile 'azurml-current'", images_given=["b:1", "a:1"])
    merged = merge([make_run(good_image("a:1")), typo])
    assert [i.name for i in merged.images] == ["a:1", "b:1"]  # a:1 was checked by the other run
    assert merged.images[1].verdict is Verdict.UNCHECKED
    assert "stopped on bad input: unknown profile 'azurml-current'" in merged.images[1].error
    assert merged.verdict is Verdict.UNCHECKED and merged.exit_code == ExitCode.UNCHECKED
    nameless = merge([make_run(good_image("a:1")), Run(usage_error="--pull=sometimes")])
    assert nameless.verdict is Verdict.UNCHECKED and "no image named" in nameless.images[1].name


def test_merge_of_nothing_is_an_error() -> None:
    with pytest.raises(ReportError):
        merge([])


# ---------------------------------------------------------------- baseline diff


def test_diff_facts_lists_added_removed_changed() -> None:
    old = {"python": "3.9.18", "conda": "23.1", "pip": {"numpy": "1.26.0", "six": "1.16"}, "apt": {"curl": "7"}}
    new = {"python": "3.9.19", "os": "ubuntu 22.04", "pip": {"numpy": "1.26.4", "flask": "3.0"}, "apt": {"curl": "7"}}
    changes = {(c.group, c.name, c.kind, c.old, c.new) for c in diff_facts(old, new)}
    assert changes == {
        ("conda", "", "removed", "23.1", "—"),
        ("os", "", "added", "—", "ubuntu 22.04"),
        ("python", "", "changed", "3.9.18", "3.9.19"),
        ("pip", "flask", "added", "—", "3.0"),
        ("pip", "numpy", "changed", "1.26.0", "1.26.4"),
        ("pip", "six", "removed", "1.16", "—"),
    }


def test_diff_facts_treats_none_as_not_observed() -> None:
    old = {"conda": None, "python": "3.9", "apt": {"curl": None}}
    new = {"conda": "4.5.11", "python": None, "apt": {}}
    changes = {(c.group, c.name, c.kind) for c in diff_facts(old, new)}
    assert changes == {("conda", "", "added"), ("python", "", "removed")}


def test_html_baseline_section_shows_status_and_version_changes(mixed_run: Run) -> None:
    baseline = copy.deepcopy(mixed_run)
    old = baseline.images[1]
    old.results[1] = StageResult("conda", Status.PASS, "conda on PATH", "conda 23.1")
    old.facts["python"] = "3.11.8"
    old.facts["pip"] = {"pip": "24.0", "numpy": "1.25.0", "six": "1.16"}
    baseline.images.append(good_image("retired:1"))
    current = copy.deepcopy(mixed_run)
    current.images.append(good_image("new:1"))

    dom = parse_html(render_html(current, baseline))
    section = dom.by_id("baseline")
    diff = section.find(cls="diff", data_image="python:3.11-slim")
    change = diff.find("tr", cls="status-change")
    assert (change.attrs["data-stage"], change.attrs["data-old"], change.attrs["data-new"]) == ("conda", "pass", "fail")
    rows = diff.find("table", cls="facts-diff").find("tbody").find_all("tr")
    facts = {(r.attrs["data-group"], r.attrs["data-name"], r.attrs["data-kind"]) for r in rows}
    assert facts == {
        ("pip", "numpy", "changed"),
        ("pip", "six", "removed"),
        ("python", "", "changed"),
    }
    assert section.find(cls="diff", data_image="new:1").attrs["data-presence"] == "new"
    assert section.find(cls="diff", data_image="retired:1").attrs["data-presence"] == "gone"
    assert not section.find_all(cls="diff", data_image=good_image().name)  # unchanged: listed, not detailed
    assert good_image().name in section.text()


def test_html_without_baseline_has_no_diff_section(mixed_run: Run) -> None:
    assert not parse_html(render_html(mixed_run)).find_all(id="baseline")
    same = parse_html(render_html(mixed_run, copy.deepcopy(mixed_run)))
    assert same.by_id("baseline").find(cls="no-changes")


# ---------------------------------------------------------------- JUnit


def test_junit_has_one_suite_per_image_with_matching_counts(mixed_run: Run) -> None:
    root = ET.fromstring(to_junit_xml(mixed_run).encode("utf-8"))
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == [i.name for i in mixed_run.images]
    for suite, image in zip(suites, mixed_run.images):
        statuses = [r.status for r in image.results]
        cases = suite.findall("testcase")
        assert int(suite.get("tests")) == len(cases) == len(statuses)
        assert int(suite.get("failures")) == statuses.count(Status.FAIL) == len(suite.findall("testcase/failure"))
        assert int(suite.get("errors")) == statuses.count(Status.ERROR) == len(suite.findall("testcase/error"))
        skipped = statuses.count(Status.SKIPPED) + statuses.count(Status.BLOCKED)
        assert int(suite.get("skipped")) == skipped == len(suite.findall("testcase/skipped"))
        assert [c.get("name") for c in cases] == [f"test_{s}" for s in STAGE_ORDER]
        assert {c.get("classname") for c in cases} == {f"baseimage.{image.name}"}
    assert (
        int(root.get("tests")) == 2 * len(STAGE_ORDER)
        and int(root.get("failures")) == 1
        and int(root.get("errors")) == 1
    )


def test_junit_testcases_carry_properties_and_messages(mixed_run: Run) -> None:
    root = ET.fromstring(to_junit_xml(mixed_run))
    conda = root.find("testsuite[@name='python:3.11-slim']/testcase[@name='test_conda']")
    props = {p.get("name"): p.get("value") for p in conda.findall("properties/property")}
    assert props["image"] == "python:3.11-slim"
    assert props["image_id"] == "sha256:" + "c" * 64
    assert props["profile"] == "azureml-current"
    assert props["stage"] == "conda"
    assert (props["expected"], props["observed"], props["digest"]) == ("conda on PATH", "not found", "")
    failure = conda.find("failure")
    assert failure.get("message") == mixed_run.images[1].results[1].summary()
    assert "install miniconda" in failure.text
    blocked = root.find("testsuite[@name='python:3.11-slim']/testcase[@name='test_azureml']/skipped")
    assert blocked.get("type") == "blocked" and blocked.get("message") == "azureml: blocked by python"
    error = root.find("testsuite[@name='python:3.11-slim']/testcase[@name='test_apt']")
    assert "RuntimeError: boom" in error.find("system-out").text


def test_junit_image_that_could_not_be_checked_is_an_error() -> None:
    broken = ImageReport("gone:1", ImageInfo("gone:1"), "base", error="pull access denied")
    suite = ET.fromstring(to_junit_xml(make_run(broken))).find("testsuite")
    assert suite.get("errors") == "1" and suite.get("tests") == "1"
    assert suite.find("testcase/error").get("message") == "pull access denied"


# ---------------------------------------------------------------- hostile text


def hostile_run() -> Run:
    image = mixed_image(f"evil:{HOSTILE}")
    image.results[0] = StageResult("os", Status.PASS, "debian", f"\x1b[31mred{HOSTILE}\x1b[0m", duration_s=0.1)
    image.results[1] = StageResult("conda", Status.FAIL, "conda", "x" * 1_000_000, remediation=HOSTILE)
    image.results[2].observed = "y" * 1_000_000  # set after construction: not clipped by the model
    image.results[5].details = {
        "log": "".join(f"\x1b]0;title\x07line {i} {HOSTILE}\x1b[1;32m ok\x1b[0m\n" for i in range(50_000)),
        HOSTILE: {"nested": HOSTILE},
        "huge": "z" * 1_000_000,
    }
    image.facts["pip"] = {HOSTILE: "\x1b[31m1.0", "big": "w" * 1_000_000}
    image.error = ""
    return make_run(image)


def test_hostile_text_is_escaped_stripped_and_cut() -> None:
    text = render_html(hostile_run())
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "\x1b" not in text and "[31m" not in text and "]0;title" not in text
    assert len(text.encode("utf-8")) < 200_000
    dom = parse_html(text)
    assert not dom.find_all("script")
    observed = dom.by_id("img-0-os").find(cls="observed").text()
    assert observed == f"red{HOSTILE}"
    assert "more characters cut" in dom.by_id("img-0-python").find(cls="observed").text()


def test_hostile_text_in_json_and_junit() -> None:
    run = hostile_run()
    xml_text = to_junit_xml(run)
    assert "\x1b" not in xml_text and "<script" not in xml_text
    root = ET.fromstring(xml_text)  # control characters would make it unparseable
    os_case = root.find("testsuite/testcase[@name='test_os']")
    assert {p.get("name"): p.get("value") for p in os_case.iter("property")}["observed"] == f"red{HOSTILE}"


def test_strip_ansi() -> None:
    assert strip_ansi("\x1b[31mred\x1b[0m plain") == "red plain"
    assert strip_ansi("\x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\") == "link"  # OSC 8 hyperlink
    assert strip_ansi("\x1b]0;title\x07after") == "after"
    assert strip_ansi("\x9b2Jcleared\x1b(Bx\x1bc") == "clearedx"
    assert strip_ansi("bell\x07 nul\x00 tab\tnl\n") == "bell nul tab\tnl\n"


# ---------------------------------------------------------------- redaction


def test_redact() -> None:
    assert redact(f"user:{SECRET}@host", [SECRET]) == "user:***@host"
    assert redact("abc", ["", "zz"]) == "abc"  # an empty secret must not insert *** everywhere
    assert redact("hunter22", ["hunter2", "hunter22"]) == "***"  # longest first


def test_secrets_are_redacted_from_every_output(tmp_path: Path) -> None:
    image = mixed_image()
    image.results[0].observed = f"logged in with {SECRET}"
    image.results[5].details["log"] = f"docker login -p {SECRET}\n"
    image.facts["registry_password"] = SECRET
    image.info.reference = f"user:{SECRET}@registry.example/app:1"
    run = make_run(image)
    outputs = {
        "html": render_html(run, secrets=[SECRET]),
        "junit": to_junit_xml(run, secrets=[SECRET]),
    }
    write_json(run, tmp_path / "r.json", secrets=[SECRET])
    write_html(run, tmp_path / "r.html", secrets=[SECRET])
    outputs["json"] = (tmp_path / "r.json").read_text(encoding="utf-8")
    outputs["html file"] = (tmp_path / "r.html").read_text(encoding="utf-8")
    for name, text in outputs.items():
        assert SECRET not in text, name
        assert "***" in text, name
    assert SECRET in render_html(run)  # nothing is redacted unless asked


# ---------------------------------------------------------------- the baseimage-report command


@pytest.fixture
def two_reports(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    write_json(make_run(good_image("cpu:1")), a)
    bad = mixed_image("gpu:1")
    bad.results[3] = StageResult("apt", Status.PASS, "9 packages", "9 packages")  # not compatible, not error
    write_json(make_run(bad, started="2024-06-02T11:00:00+00:00"), b)
    return a, b


def test_cli_merges_into_html_junit_and_json(two_reports: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    html, junit, merged = tmp_path / "out.html", tmp_path / "out.xml", tmp_path / "out.json"
    argv = ["merge", *map(str, two_reports), "--html", str(html), "--junit", str(junit), "--json", str(merged)]
    assert main(argv) == ExitCode.NOT_COMPATIBLE
    run = load_json(merged)
    assert [i.name for i in run.images] == ["cpu:1", "gpu:1"]
    assert [s.get("name") for s in ET.parse(junit).getroot().findall("testsuite")] == ["cpu:1", "gpu:1"]
    sections = parse_html(html.read_text(encoding="utf-8")).find_all("section", cls="image")
    assert [s.attrs["data-verdict"] for s in sections] == ["compatible", "not compatible"]
    assert "not compatible" in capsys.readouterr().out


def test_cli_exit_codes_follow_the_merged_verdict(two_reports: tuple[Path, Path]) -> None:
    good, bad = map(str, two_reports)
    assert main(["merge", good]) == 0
    assert main(["merge", good, bad]) == 1


def test_cli_baseline(two_reports: tuple[Path, Path], tmp_path: Path) -> None:
    html = tmp_path / "diff.html"
    assert main(["merge", str(two_reports[1]), "--baseline", str(two_reports[0]), "--html", str(html)]) == 1
    section = parse_html(html.read_text(encoding="utf-8")).by_id("baseline")
    assert section.find(cls="diff", data_image="gpu:1").attrs["data-presence"] == "new"


@pytest.mark.parametrize(
    ("content", "extra"),
    [(None, []), ("{oops", []), ('{"schema_version": 99, "images": []}', []), ("ok", ["--baseline", "/nope"])],
)
def test_cli_bad_input_is_one_line_and_exit_4(
    two_reports: tuple[Path, Path], tmp_path: Path, capsys, content: str | None, extra: list[str]
) -> None:
    path = tmp_path / "input.json"
    if content == "ok":
        path = two_reports[0]
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    assert main(["merge", str(path), *extra]) == ExitCode.USAGE_ERROR
    err = capsys.readouterr().err
    assert err.startswith("baseimage-report: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err


def test_cli_usage_errors_exit_4(capsys) -> None:
    assert main([]) == 4
    assert main(["merge"]) == 4
    assert main(["explode", "a.json"]) == 4
    err = capsys.readouterr().err
    assert all(line.startswith("baseimage-report: error: ") for line in err.splitlines())


def test_cli_unwritable_output_exits_4(two_reports: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    assert main(["merge", str(two_reports[0]), "--html", str(tmp_path / "no" / "dir" / "r.html")]) == 4
    assert capsys.readouterr().err.startswith("baseimage-report: error: ")


def test_cli_help(capsys) -> None:
    assert main(["merge", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--html" in out and "--junit" in out and "--baseline" in out and "exit status" in out


def test_python_dash_m_entry_point(two_reports: tuple[Path, Path], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    ok = subprocess.run(
        [sys.executable, "-m", "pytest_baseimage.report", "merge", *map(str, two_reports)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert ok.returncode == 1, ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "pytest_baseimage.report", "merge", str(tmp_path / "missing.json")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 4
    assert bad.stderr.startswith("baseimage-report: error: ") and bad.stderr.count("\n") == 1


def test_split_pytest_junit_by_image_in_given_order(tmp_path: Path) -> None:
    from pytest_baseimage.report.junit import split_by_image

    def case(name: str, image: str | None, outcome: str = "") -> str:
        props = f'<properties><property name="image" value="{image}" /></properties>' if image else ""
        return f'<testcase classname="suite" name="{name}" time="0.5">{props}{outcome}</testcase>'

    path = tmp_path / "junit.xml"
    path.write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">'
        '<testsuite name="pytest" errors="0" failures="1" skipped="0" tests="4" time="2" hostname="h">'
        + case("test_os[b:1]@baseimage:b:1", "b:1", '<failure message="x">x</failure>')
        + case("test_os[a:1]", "a:1")
        + case("test_conda[a:1]", "a:1", '<skipped message="blocked by os" />')
        + case("test_mine", None)
        + "</testsuite></testsuites>"
    )
    split_by_image(str(path), order=["a:1", "b:1"])
    suites = ET.parse(path).getroot().findall("testsuite")
    assert [s.get("name") for s in suites] == ["a:1", "b:1", "pytest"]
    assert [(s.get("tests"), s.get("failures"), s.get("skipped")) for s in suites] == [
        ("2", "0", "1"),
        ("1", "1", "0"),
        ("1", "0", "0"),
    ]
    assert suites[1].find("testcase").get("name") == "test_os[b:1]"
    assert suites[0].get("hostname") == "h"
