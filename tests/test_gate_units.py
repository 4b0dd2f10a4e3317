"""Pure logic of the gate service: event parsing, the config, Harbor findings, the check's argv (the store:
test_gate_store.py)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_baseimage.gate import config as gate_config
from pytest_baseimage.gate import events, harbor
from pytest_baseimage.gate.store import RUNNING, NewJob
from pytest_baseimage.gate.store_sqlite import SqliteStore
from pytest_baseimage.gate.worker import PASSWORD_VAR, Outcome, Workers, command
from pytest_baseimage.report.model import Run
from pytest_baseimage.results import ImageInfo, ImageReport, StageResult, Status
from pytest_baseimage.secret import Secret

D1, D2 = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def event(action: str = "push", tag: str = "v1", digest: str = D1, media: str = events.MANIFEST_MEDIA_TYPES[0]) -> dict:
    return {"action": action, "target": {"mediaType": media, "digest": digest, "repository": "staging/app", "tag": tag}}


# -- events ------------------------------------------------------------------------------------------------------
def test_only_tagged_manifest_pushes_become_pushes_and_duplicates_collapse():
    body = [event(), event(), event(tag="v2"), event("pull"), event("delete"), event(tag=""), event(media="x/blob")]
    pushes, ignored = events.parse(json.dumps({"events": body}).encode())
    assert [(p.digest, p.tag) for p in pushes] == [(D1, "v1"), (D1, "v2")]
    assert ignored == 4


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"events": {}}', json.dumps({"events": [event(), {"action": "push"}]}).encode(),
     json.dumps({"events": [event(digest="sha256:xyz")]}).encode(),
     json.dumps({"events": [{**event(), "target": {**event()["target"], "repository": "../etc"}}]}).encode()],
)  # fmt: skip
def test_a_body_that_is_no_notification_envelope_is_refused_whole(body):
    with pytest.raises(events.BadEvents):
        events.parse(body)


def test_both_notification_media_types_are_accepted_with_parameters():
    assert events.media_type_ok("application/vnd.docker.distribution.events.v1+json")
    assert events.media_type_ok("application/vnd.docker.distribution.events.v2+json; charset=utf-8")
    assert not events.media_type_ok("application/json")


# -- config --------------------------------------------------------------------------------------------------
BASE = """\
token_env = "TOK"
[[registries]]
url = "http://127.0.0.1:5000"
username = "gate"
{secret}
[[promote]]
from = "staging/*"
to = "certified/{{name}}"
profile = "azureml-current"
"""


def test_secrets_come_from_the_environment_or_a_file_and_never_print(tmp_path):
    (tmp_path / "pw").write_text("from-file\n")
    path = tmp_path / "gate.toml"
    path.write_text(BASE.format(secret='password_file = "pw"'))
    loaded = gate_config.load(path, {"TOK": "tok-value"})
    assert loaded.secrets.registry_passwords["http://127.0.0.1:5000"].reveal() == "from-file"
    assert "from-file" not in repr(loaded) and "tok-value" not in repr(loaded)
    assert set(loaded.secrets.values()) == {"from-file", "tok-value"}
    rule = loaded.config.rule_for("staging/app")
    assert rule is not None and rule.target("staging/app") == "certified/app"
    assert loaded.config.rule_for("certified/app") is None


@pytest.mark.parametrize(
    ("secret", "message"),
    [('password = "inline"', "password"), ('password_env = "UNSET_VAR"', "UNSET_VAR is not set"),
     ('password_env = "A"\npassword_file = "B"', "not both")],
)  # fmt: skip
def test_an_inline_or_missing_secret_is_a_config_error(tmp_path, secret, message):
    path = tmp_path / "gate.toml"
    path.write_text(BASE.format(secret=secret))
    with pytest.raises(gate_config.GateConfigError, match=message):
        gate_config.load(path, {"TOK": "t"})


def test_the_database_password_comes_from_a_file_and_is_scrubbed_like_every_secret(tmp_path):
    (tmp_path / "db-pw").write_text("db-from-file\n")
    path = tmp_path / "gate.toml"
    path.write_text(
        'database = "postgresql://gate@db:5432/gate"\ndatabase_password_file = "db-pw"\ntoken_env = "TOK"\n'
    )
    loaded = gate_config.load(path, {"TOK": "tok-value"})
    assert loaded.config.postgres and loaded.secrets.database_password.reveal() == "db-from-file"
    assert set(loaded.secrets.values()) == {"db-from-file", "tok-value"} and "db-from-file" not in repr(loaded)


@pytest.mark.parametrize(
    ("database", "message"),
    [('database = "gate.db"\ndatabase_password_env = "X"', "go with a postgresql:// database"),
     ('database = "mysql://gate@db/gate"', "an SQLite path or a postgresql://"),
     ('database = "postgresql:///gate"', "an SQLite path or a postgresql://"),
     ('database = "postgresql://gate@db/gate"\ndatabase_password_env = "X"\ndatabase_password_file = "f"',
      "not both")],
)  # fmt: skip
def test_a_database_setting_that_cannot_work_is_a_config_error(tmp_path, database, message):
    path = tmp_path / "gate.toml"
    path.write_text(f'{database}\ntoken_env = "TOK"\n')
    with pytest.raises(gate_config.GateConfigError, match=message):
        gate_config.load(path, {"TOK": "t", "X": "x"})


def test_attestations_need_the_attest_package_and_one_key_source(tmp_path):
    path = tmp_path / "gate.toml"
    path.write_text(BASE.format(secret="") + "[attest]\nenabled = true\n")
    with pytest.raises(gate_config.GateConfigError, match="exactly one of"):
        gate_config.load(path, {"TOK": "t"})
    path.write_text(BASE.format(secret="") + "[attest]\nenabled = true\nunsigned = true\n")
    if importlib.util.find_spec("pytest_baseimage.attest") is None:
        with pytest.raises(gate_config.GateConfigError, match="--attest"):
            gate_config.load(path, {"TOK": "t"})
    else:
        assert gate_config.load(path, {"TOK": "t"}).config.attest.unsigned


# -- Harbor --------------------------------------------------------------------------------------------------
def run_with(*results: StageResult, error: str = "") -> Run:
    image = ImageReport("img", ImageInfo("img"), "fixture", results=list(results), error=error)
    return Run(images=[image], started="2026-11-26T06:00:00+00:00", finished="2026-11-26T06:00:05+00:00")


def test_each_failed_stage_is_a_finding_at_the_configured_severity():
    run = run_with(
        StageResult("os", Status.PASS),
        StageResult("python", Status.FAIL, expected="~=3.11", observed="3.9.2", remediation="use Python 3.11"),
        StageResult("apt", Status.BLOCKED, reason="python failed"),
        StageResult("gpu", Status.ERROR, reason="engine gone"),
    )
    report = harbor.report(run, gate_config.HarborSection(failed_severity="Critical"), "r", D1, harbor.CONSUMES[0])
    found = {v["id"]: v for v in report["vulnerabilities"]}
    assert set(found) == {"BASEIMAGE-PYTHON", "BASEIMAGE-GPU"}
    assert found["BASEIMAGE-PYTHON"]["severity"] == "Critical"
    assert found["BASEIMAGE-PYTHON"]["description"] == "3.9.2"
    assert found["BASEIMAGE-PYTHON"]["fix_version"] == "use Python 3.11"
    assert found["BASEIMAGE-GPU"]["severity"] == "Unknown"
    assert report["severity"] == "Critical"


def test_an_image_that_could_not_be_checked_is_one_unknown_finding():
    report = harbor.report(run_with(error="pull failed"), gate_config.HarborSection(), "r", D1, harbor.CONSUMES[0])
    assert [(v["id"], v["severity"]) for v in report["vulnerabilities"]] == [("BASEIMAGE-IMAGE", "Unknown")]


def test_the_report_type_follows_accept():
    assert harbor.report_type("") == harbor.REPORT_TYPES[0]
    assert harbor.report_type(harbor.REPORT_TYPES[1].replace("; ", ";")) == harbor.REPORT_TYPES[1]
    assert harbor.report_type("application/vnd.security.sbom.report+json; version=1.0") is None


# -- the check's command line ------------------------------------------------------------------------------------
def test_the_check_pins_the_digest_and_names_the_password_variable_never_the_password(tmp_path: Path):
    store = SqliteStore(tmp_path / "gate.db")
    job, _ = store.enqueue(NewJob("http://127.0.0.1:5000", "staging/app", D1, "azureml-current", "certified/app"))
    argv = command(job, ("gate", Secret("s3cret-value")), tmp_path, False)
    assert f"--base-image=127.0.0.1:5000/staging/app@{D1}" in argv
    assert "--require-digest" in argv and f"--registry-password-env={PASSWORD_VAR}" in argv
    assert not any("s3cret-value" in arg for arg in argv)


def test_the_service_imports_neither_pytest_nor_docker_nor_the_postgresql_driver_it_was_not_asked_for():
    imports = "import sys, pytest_baseimage.gate.app, pytest_baseimage.gate.cli"
    code = f"{imports}; print('pytest' in sys.modules, 'docker' in sys.modules, 'psycopg' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["False", "False", "False"], proc.stderr


def test_the_config_shown_in_the_readme_loads(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## The gate service", 1)[1]
    block = section.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "gate.toml").write_text(block)
    loaded = gate_config.load(tmp_path / "gate.toml", {"GATE_TOKEN": "t", "REGISTRY_PASSWORD": "p"})
    assert loaded.config.promote[0].target("staging/app") == "certified/app"
    assert [e.docker_host for e in loaded.config.engines] == ["", "tcp://builder:2376"]


def test_the_replicas_config_shown_in_the_readme_loads_with_the_password_from_its_variable(tmp_path):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("**Several replicas.**", 1)[1]
    block = section.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "gate.toml").write_text('token_env = "GATE_TOKEN"\n' + block)
    loaded = gate_config.load(tmp_path / "gate.toml", {"GATE_TOKEN": "t", "GATE_DB_PASSWORD": "db-secret"})
    assert loaded.config.postgres and loaded.config.lease_s == 60
    assert "db-secret" in loaded.secrets.values() and "db-secret" not in repr(loaded.secrets)


def test_a_worker_whose_lease_was_taken_over_neither_promotes_nor_settles_the_job(tmp_path):
    path = tmp_path / "gate.toml"
    path.write_text(BASE.format(secret=""))
    loaded = gate_config.load(path, {"TOK": "t"})
    mine, theirs = SqliteStore(tmp_path / "gate.db", lease=1), SqliteStore(tmp_path / "gate.db", lease=1)
    mine.enqueue(NewJob("http://127.0.0.1:5000", "staging/app", D1, "p", "certified/app", ("v1",)))
    claimed = mine.claim()
    mine.write(lambda db: db.execute("UPDATE jobs SET heartbeat = 0"))  # as after an outage longer than the lease
    assert theirs.expire() == 1 and theirs.claim() is not None
    workers = Workers(loaded, mine, lambda seconds, verdict: None)
    promoted: list[int] = []
    workers._promote = lambda job: promoted.append(job.id) or ["certified/app:v1"]  # type: ignore[method-assign]
    workers._settle(claimed, Outcome("compatible", 0, "", False))
    job = theirs.get(claimed.id)
    assert promoted == [] and job.state == RUNNING and job.owner == theirs.owner and job.verdict == ""
