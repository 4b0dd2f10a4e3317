"""Waivers as pure logic: the file's validation, expiry at the start of the date, what a waiver can accept, and
how `images` matches. The runs against a real image are in test_waivers_docker.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pytest_baseimage import waivers
from pytest_baseimage.results import StageResult, Status

DAY = dt.date(2027, 3, 31)


def waiver(**fields) -> waivers.Waiver:
    base = {"index": 0, "stage": "conda", "images": ("*",), "justification": "why", "expires": DAY}
    return waivers.Waiver(**{**base, **fields})


def failed(stage: str = "conda", **details) -> StageResult:
    return StageResult(stage, Status.FAIL, "conda >=4.5", "no conda", details=details)


def test_a_waiver_expires_at_the_start_of_its_date():
    assert waiver().active(DAY - dt.timedelta(days=1))
    assert not waiver().active(DAY)
    assert waivers.judge(failed(), [waiver()], DAY - dt.timedelta(days=1)).status is Status.WAIVED
    expired = waivers.judge(failed(), [waiver()], DAY)
    assert expired.status is Status.FAIL and expired.waiver["message"] == "waiver for conda expired on 2027-03-31"


def test_errors_and_passes_are_never_turned_into_waived():
    error = StageResult("conda", Status.ERROR, reason="the engine stopped answering")
    assert waivers.judge(error, [waiver()], DAY - dt.timedelta(days=1)) is error
    passed = StageResult("conda", Status.PASS, observed="conda 24.11")
    assert waivers.judge(passed, [waiver()], DAY - dt.timedelta(days=1)) is passed


def test_a_blocked_stage_can_be_waived_and_keeps_what_was_observed():
    blocked = StageResult("apt", Status.BLOCKED, reason="blocked by os")
    result = waivers.judge(blocked, [waiver(stage="apt")], dt.date(2027, 1, 1))
    assert result.status is Status.WAIVED and result.reason.startswith("blocked, waived until 2027-03-31")


def test_check_waivers_cover_a_stage_only_when_every_failed_check_is_covered():
    apt = failed("apt", missing=["nginx-light", "runit"])
    on = dt.date(2027, 1, 1)
    one = waiver(stage="apt", check="nginx-light")
    assert waivers.judge(apt, [one], on).status is Status.FAIL
    both = [one, waiver(stage="apt", check="runit", expires=dt.date(2027, 2, 1))]
    result = waivers.judge(apt, both, on)
    assert result.status is Status.WAIVED and result.waiver["expires"] == "2027-02-01"  # the earliest end shows


def test_run_false_means_not_run_while_active():
    off = waiver(run=False)
    assert waivers.not_run([off], DAY - dt.timedelta(days=1), "conda").status is Status.WAIVED
    assert waivers.not_run([off], DAY, "conda") is None  # expired: the stage runs and is judged normally


@pytest.mark.parametrize(("days", "warned"), [(14, True), (15, False), (1, True)])
def test_a_waiver_ending_within_14_days_warns(days, warned):
    on = DAY - dt.timedelta(days=days)
    message = waivers.judge(failed(), [waiver()], on).waiver["message"]
    assert bool(message) is warned
    if warned:
        assert message == f"waiver for conda expires on 2027-03-31 (in {days} day{'s' * (days != 1)})"


def test_images_match_by_glob_on_names_or_by_digest():
    digest = "sha256:" + "c" * 64
    names, digests = ["reg.example/team/base:1"], [digest]
    assert waiver(images=("reg.example/team/*",)).matches_image(names, digests)
    assert not waiver(images=("reg.example/other/*",)).matches_image(names, digests)
    assert waiver(images=(digest,)).matches_image(names, digests)
    assert waiver(images=(f"reg.example/team/base@{digest}",)).matches_image(names, digests)
    assert not waiver(images=("sha256:" + "d" * 64,)).matches_image(names, digests)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "waivers.yml"
    path.write_text(text)
    return str(path)


ENTRY = "waivers:\n  - stage: conda\n    images: [a/*, b/*]\n    justification: why\n    expires: {expires}\n{extra}"


def test_a_quoted_or_plain_date_loads_and_images_may_be_a_list(tmp_path):
    for expires in ("2027-03-31", '"2027-03-31"'):
        loaded = waivers.load(write(tmp_path, ENTRY.format(expires=expires, extra="")))
        assert loaded.waivers[0].expires == DAY and loaded.waivers[0].images == ("a/*", "b/*")


@pytest.mark.parametrize(
    ("expires", "extra", "message"),
    [
        ("2027-03-31T10:00:00", "", "is not a date (YYYY-MM-DD)"),
        ("31.03.2027", "", "'31.03.2027' is not a date (YYYY-MM-DD)"),
        ("2027-03-31", "    runn: false\n", "waivers.0.runn: Extra inputs are not permitted"),
        ("2027-03-31", "    run: maybe\n", "waivers.0.run: Input should be a valid boolean"),
    ],
)
def test_bad_entries_name_the_entry_and_the_key(tmp_path, expires, extra, message):
    with pytest.raises(waivers.WaiverError) as raised:
        waivers.load(write(tmp_path, ENTRY.format(expires=expires, extra=extra)))
    assert message in str(raised.value) and raised.value.exit_code == 4 and "\n" not in str(raised.value)


def test_a_missing_file_and_a_file_without_the_list_are_usage_errors(tmp_path):
    with pytest.raises(waivers.WaiverError, match="cannot read it"):
        waivers.load(str(tmp_path / "absent.yml"))
    with pytest.raises(waivers.WaiverError, match="expected a mapping"):
        waivers.load(write(tmp_path, "- stage: conda\n"))


def test_max_days_caps_how_far_ahead_a_waiver_may_reach(tmp_path):
    path = write(tmp_path, ENTRY.format(expires="2027-03-31", extra=""))
    assert waivers.load(path, max_days=90, on=dt.date(2027, 1, 1)).waivers
    with pytest.raises(waivers.WaiverError, match="more than 30 days ahead"):
        waivers.load(path, max_days=30, on=dt.date(2027, 1, 1))


def test_every_report_shows_a_waived_stage_from_the_same_result():
    """JSON (schema-valid), merged JUnit and HTML render the waived status, its waiver, and exit 0."""
    import json
    import xml.etree.ElementTree as ET

    jsonschema = pytest.importorskip("jsonschema")
    from pytest_baseimage.report import Run
    from pytest_baseimage.report.html import render_html
    from pytest_baseimage.report.junit import to_junit_xml
    from pytest_baseimage.results import ImageInfo, ImageReport

    result = waivers.judge(failed(), [waiver(owner="platform-team")], dt.date(2027, 1, 1))
    image = ImageReport("img:1", ImageInfo("img:1", image_id="sha256:" + "f" * 64), "fixture", [result])
    run = Run(images=[image], plugin_version="0", started="2027-01-01T00:00:00+00:00")
    assert (run.verdict.value, run.exit_code) == ("compatible with waivers", 0)
    schema = json.loads((Path(__file__).parents[1] / "pytest_baseimage" / "report" / "schema.json").read_text())
    jsonschema.validate(run.to_dict(), schema)
    case = next(ET.fromstring(to_junit_xml(run)).iter("testcase"))
    props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert (props["status"], props["waiver_owner"]) == ("waived", "platform-team")
    assert props["waiver_expires"] == "2027-03-31"
    assert case.find("skipped").get("message").startswith("conda: fail, waived until 2027-03-31")
    html = render_html(run)
    assert "banner verdict-waived" in html and "waiver: why (until 2027-03-31, owner platform-team)" in html
