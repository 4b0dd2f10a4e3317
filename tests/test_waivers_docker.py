"""Waivers on a real image: `no-conda` fails exactly one stage (conda) under the fixture profile.

A valid waiver makes it "compatible with waivers" (exit 0) in every output; the same waiver expired is ignored
(exit 1) and says so; a waiver that matched nothing is reported stale; bad files are exit 4 in one line.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from conftest import FIXTURE_PROFILE, junit
from registry_server import Outcome, run_plugin

pytestmark = pytest.mark.docker

SCHEMA = Path(__file__).resolve().parents[1] / "pytest_baseimage" / "report" / "schema.json"
JUSTIFICATION = "conda arrives with the model environment; tracked in PLAT-123"


def today() -> dt.date:
    return dt.datetime.now(dt.timezone.utc).date()


def waiver_file(path: Path, *entries: str) -> Path:
    path.write_text("waivers:\n" + "".join(entries), encoding="utf-8")
    return path


def entry(stage: str, images: str, expires: str, *, justification: str = JUSTIFICATION, run: bool = True) -> str:
    lines = [f"  - stage: {stage}", f'    images: "{images}"']
    lines += [f'    justification: "{justification}"'] if justification else []
    lines += [f"    expires: {expires}", "    owner: platform-team", f"    run: {'true' if run else 'false'}"]
    return "\n".join(lines) + "\n"


def certify(tmp_path: Path, image: str, *args: str) -> Outcome:
    out = run_plugin(f"--base-image={image}", f"--profile={FIXTURE_PROFILE}", "-q", *args, cwd=tmp_path)
    assert "Traceback" not in out.output, out.output
    return out


def stage(data: dict, name: str) -> dict:
    return next(r for r in data["images"][0]["results"] if r["stage"] == name)


def test_without_a_waiver_no_conda_fails_only_the_conda_stage(tmp_path, images, no_leaks):
    out = certify(tmp_path, images("no-conda"))
    assert out.returncode == 1, out.output
    statuses = {r["stage"]: r["status"] for r in json.loads(out.files["json"])["images"][0]["results"]}
    assert [s for s, status in statuses.items() if status == "fail"] == ["conda"]


def test_a_valid_waiver_makes_it_compatible_with_waivers_in_every_output(tmp_path, images, no_leaks):
    jsonschema = pytest.importorskip("jsonschema")
    expires = (today() + dt.timedelta(days=100)).isoformat()
    waivers = waiver_file(tmp_path / "waivers.yml", entry("conda", "pytest-baseimage-fixture/no-conda:*", expires))
    out = certify(tmp_path, images("no-conda"), f"--waivers={waivers}")
    assert out.returncode == 0, out.output
    assert "pytest-baseimage-fixture/no-conda:latest: COMPATIBLE WITH WAIVERS" in out.stdout
    assert f"conda    waived  fail, waived until {expires} (owner platform-team): {JUSTIFICATION}" in out.stdout
    data = json.loads(out.files["json"])
    jsonschema.validate(data, json.loads(SCHEMA.read_text()))
    assert (data["verdict"], data["exit_code"]) == ("compatible with waivers", 0)
    assert data["images"][0]["verdict"] == "compatible with waivers"
    conda = stage(data, "conda")
    assert conda["status"] == "waived"
    assert conda["observed"].startswith("no `conda` on PATH")  # the failure itself is kept
    assert (conda["waiver"]["justification"], conda["waiver"]["owner"], conda["waiver"]["expires"]) == (
        JUSTIFICATION,
        "platform-team",
        expires,
    )
    case = junit(tmp_path / "junit.xml")["test_conda"]
    assert case["outcome"] == "skipped" and JUSTIFICATION in case["message"]
    assert (case["props"]["status"], case["props"]["waiver_expires"]) == ("waived", expires)
    assert case["props"]["waiver_justification"] == JUSTIFICATION
    html = out.files["html"]
    assert "banner verdict-waived" in html and "badge status-waived" in html and JUSTIFICATION in html


def test_no_waivers_refuses_them(tmp_path, images, no_leaks):
    expires = (today() + dt.timedelta(days=100)).isoformat()
    waivers = waiver_file(tmp_path / "waivers.yml", entry("conda", "pytest-baseimage-fixture/no-conda:*", expires))
    out = certify(tmp_path, images("no-conda"), f"--waivers={waivers}", "--no-waivers")
    assert out.returncode == 1, out.output
    assert f"waivers refused (--no-waivers): {waivers} was not applied" in out.stdout
    assert stage(json.loads(out.files["json"]), "conda")["status"] == "fail"


def test_an_expired_waiver_is_ignored_and_says_so(tmp_path, images, no_leaks):
    expired = today().isoformat()  # expiry is at the start of the date: today is already past it
    waivers = waiver_file(tmp_path / "waivers.yml", entry("conda", "pytest-baseimage-fixture/no-conda:*", expired))
    out = certify(tmp_path, images("no-conda"), f"--waivers={waivers}")
    assert out.returncode == 1, out.output
    message = f"waiver for conda expired on {expired}"
    assert "NOT COMPATIBLE" in out.stdout and message in out.stdout
    conda = stage(json.loads(out.files["json"]), "conda")
    assert conda["status"] == "fail" and conda["waiver"]["message"] == message
    assert message in junit(tmp_path / "junit.xml")["test_conda"]["message"]


def test_a_stale_waiver_and_one_about_to_expire_are_reported(tmp_path, images, no_leaks):
    soon = (today() + dt.timedelta(days=3)).isoformat()
    waivers = waiver_file(
        tmp_path / "waivers.yml",
        entry("conda", "pytest-baseimage-fixture/no-conda:*", soon),
        entry("apt", "registry.example/other/*", "2099-01-01"),
    )
    out = certify(tmp_path, images("no-conda"), f"--waivers={waivers}")
    assert out.returncode == 0, out.output
    stale = "stale waiver: waivers.1 for apt matched no image in this run"
    expiring = f"waiver for conda expires on {soon} (in 3 days)"
    assert stale in out.stdout and expiring in out.stdout
    assert {stale, f"pytest-baseimage-fixture/no-conda:latest: {expiring}"} <= set(
        json.loads(out.files["json"])["notes"]
    )


def test_run_false_does_not_run_the_stage(tmp_path, images, no_leaks):
    waivers = waiver_file(
        tmp_path / "waivers.yml", entry("conda", "pytest-baseimage-fixture/no-conda:*", "2099-01-01", run=False)
    )
    out = certify(tmp_path, images("no-conda"), f"--waivers={waivers}")
    assert out.returncode == 0, out.output
    conda = stage(json.loads(out.files["json"]), "conda")
    assert conda["status"] == "waived" and conda["reason"].startswith("not run: waived until 2099-01-01")
    assert conda["observed"] == ""  # it was not looked at


def test_a_waiver_for_another_image_digest_does_not_apply(tmp_path, images, docker_client, no_leaks):
    other = docker_client.images.get(images("good")).id
    waivers = waiver_file(tmp_path / "waivers.yml", entry("conda", other, "2099-01-01"))
    out = certify(tmp_path, images("no-conda"), f"--waivers={waivers}")
    assert out.returncode == 1, out.output
    assert "stale waiver: waivers.0 for conda" in out.stdout
    own = docker_client.images.get(images("no-conda")).id
    waiver_file(tmp_path / "waivers.yml", entry("conda", own, "2099-01-01"))
    assert certify(tmp_path, images("no-conda"), f"--waivers={waivers}").returncode == 0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (entry("conda", "x/*", "2027-02-30"), "waivers.0.expires: '2027-02-30' is not a date (YYYY-MM-DD)"),
        (entry("conda", "x/*", "next-week"), "waivers.0.expires: 'next-week' is not a date (YYYY-MM-DD)"),
        (entry("conda", "x/*", "2099-01-01", justification=""), "waivers.0.justification: Field required"),
        (entry("condaa", "x/*", "2099-01-01"), "waivers.0.stage: unknown stage 'condaa'"),
        ("  - [unclosed\n", "is not valid YAML"),
    ],
    ids=["impossible-date", "not-a-date", "no-justification", "unknown-stage", "bad-yaml"],
)
def test_a_bad_waiver_file_is_exit_4_in_one_line(tmp_path, images, body, message):
    waivers = waiver_file(tmp_path / "waivers.yml", body)
    out = certify(tmp_path, images("no-conda"), f"--waivers={waivers}")
    assert out.returncode == 4, out.output
    errors = [line for line in out.output.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1 and message in errors[0], out.output
    assert json.loads(out.files["json"])["verdict"] == "usage error"


def test_the_matrix_file_names_the_waivers_per_image(tmp_path, images, no_leaks):
    """[images.waivers] file = "..." is read relative to the matrix file; --no-waivers still refuses it."""
    waiver_file(tmp_path / "waivers.yml", entry("conda", "*", "2099-01-01"))
    matrix = tmp_path / "matrix.toml"
    matrix.write_text(
        f'[defaults]\nprofile = "{FIXTURE_PROFILE}"\n\n'
        f'[[images]]\nref = "{images("no-conda")}"\nname = "waived"\n[images.waivers]\nfile = "waivers.yml"\n\n'
        f'[[images]]\nref = "{images("missing-apt")}"\nname = "judged"\n'
    )
    out = run_plugin(f"--base-image-matrix={matrix}", "-q", cwd=tmp_path)
    assert out.returncode == 1, out.output  # "judged" (missing-apt) has no waiver file
    verdicts = {image["name"]: image["verdict"] for image in json.loads(out.files["json"])["images"]}
    assert verdicts == {"waived": "compatible with waivers", "judged": "not compatible"}
    refused = run_plugin(f"--base-image-matrix={matrix}", "--no-waivers", "-q", cwd=tmp_path)
    assert {i["verdict"] for i in json.loads(refused.files["json"])["images"]} == {"not compatible"}


def test_a_check_inside_a_stage_is_waived_only_when_every_failed_check_is(tmp_path, images, no_leaks):
    """missing-apt lacks nginx-light and runit: waiving one package leaves the apt stage failed."""
    one = "  - stage: apt\n    check: nginx-light\n    images: '*missing-apt*'\n"
    one += "    justification: served by the sidecar\n    expires: 2099-01-01\n"
    waivers = waiver_file(tmp_path / "waivers.yml", one)
    out = certify(tmp_path, images("missing-apt"), f"--waivers={waivers}")
    assert out.returncode == 1, out.output
    waiver_file(tmp_path / "waivers.yml", one, one.replace("nginx-light", "runit"))
    out = certify(tmp_path, images("missing-apt"), f"--waivers={waivers}")
    assert out.returncode == 0, out.output
    apt = stage(json.loads(out.files["json"]), "apt")
    assert (apt["status"], apt["details"]["missing"]) == ("waived", ["nginx-light", "runit"])


def test_a_live_stage_waived_with_run_false_starts_no_container(tmp_path, images, docker_client, no_leaks):
    """The scoring server normally starts early, in the background: `run: false` must stop that too."""
    import os
    import subprocess
    import time

    from conftest import plugin_argv

    waivers = waiver_file(tmp_path / "waivers.yml", entry("scoring", "*", "2099-01-01", run=False))
    since = int(time.time()) - 1
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    args = [f"--base-image={images('good')}", f"--profile={FIXTURE_PROFILE}", f"--waivers={waivers}", "-q"]
    proc = subprocess.Popen(plugin_argv(*args), cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "scoring  waived  not run: waived until 2099-01-01" in out
    labels = [f"org.pytest-baseimage.pid={proc.pid}"]
    events = docker_client.events(
        since=since, until=int(time.time()) + 1, decode=True, filters={"label": labels, "event": "create"}
    )
    roles = {event["Actor"]["Attributes"].get("org.pytest-baseimage.role") for event in events}
    assert "candidate" in roles and "scoring" not in roles, roles
