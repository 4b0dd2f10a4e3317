"""The scoring stage's decisions, fed with observations: no Docker, no network."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_baseimage import profiles, scoring
from pytest_baseimage.composition import BUILTIN
from pytest_baseimage.errors import ProfileError
from pytest_baseimage.facts import Facts
from pytest_baseimage.results import Status
from pytest_baseimage.scoring import Exchange, ScoringObservation

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures" / "scoring"

INIT_LOG = """\
2026-11-25 12:27:17,984 I [6] azmlinfsrv.user_script - Invoking user's init function
2026-11-25 12:27:17,984 E [6] azmlinfsrv - User's init function failed
2026-11-25 12:27:17,985 E [6] azmlinfsrv - Encountered Exception Traceback (most recent call last):
  File "/opt/conda/lib/python3.11/site-packages/azureml_inference_server_http/server/user_script.py", line 119
    self._user_init()
  File "/var/azureml-app/score.py", line 2, in init
    raise RuntimeError("model file is corrupt")
RuntimeError: model file is corrupt

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "/opt/conda/lib/python3.11/site-packages/azureml_inference_server_http/server/aml_blueprint.py", line 109
    self.user_script.invoke_init()
azureml_inference_server_http.server.user_script.UserScriptException: Caught an unhandled exception from the user script

2026-11-25 12:27:18,152 E [1] gunicorn.error - Worker (pid:6) exited with code 3.
2026-11-25 12:27:18,157 E [1] gunicorn.error - Reason: Worker failed to boot.
"""
RUN_LOG = INIT_LOG.replace("init", "run").replace(
    "RuntimeError: model file is corrupt", "ValueError: cannot score this input"
)


@pytest.fixture(scope="module")
def profile() -> profiles.Profile:
    return profiles.load("azureml-current")


# A fixed draw of the built-in sample, so that the observations below can answer it: [4.75, 0.25].
FIXED_SAMPLE = scoring.Sample(seed=0, weights=(0.5, -1.0, 2.0), bias=0.25, rows=((1.0, 2.0, 3.0), (0.0, 0.0, 0.0)))


@pytest.fixture(scope="module")
def spec(profile) -> scoring.ScoringSpec:
    return scoring.build_spec(profile, sample=FIXED_SAMPLE)


def healthy(spec, *, status=200, body='{"result": [4.75, 0.25]}', swagger=200, headers=None, log=""):
    """An observation of a server that booted, with the score and swagger answers given."""
    return ScoringObservation(
        spec=spec, running=True, healthy=True, boot_s=0.6, polls=3, log=log,
        last_liveness=Exchange("GET", "/", status=200, body="Healthy"),
        score=Exchange("POST", "/score", status=status, body=body, headers=headers or {}, elapsed_s=0.012),
        swagger=Exchange("GET", "/swagger.json", status=swagger, body="{}"),
        create_to_score_s=0.7,
    )  # fmt: skip


def check(profile, obs):
    return scoring.check_scoring(Facts(), profile, obs)


# -- registration and options ------------------------------------------------------------------------------
def test_is_declared_after_azureml():
    stage = BUILTIN.get("scoring")
    assert stage.prerequisites == ("azureml",)
    assert stage.observe is scoring.observe_scoring
    assert stage.check is scoring.check_scoring


def test_options_are_resolved_and_checked(tmp_path):
    script = tmp_path / "score.py"
    script.write_text("def init(): pass\n")
    expected = tmp_path / "expected.json"
    expected.write_text('{"ok": true}')
    values = {
        "score_script": str(script),
        "model_dir": str(tmp_path),
        "score_payload": None,
        "score_expected": str(expected),
    }
    config = SimpleNamespace(getoption=lambda name, default=None: values.get(name, default))
    options = scoring.options_from_config(config)
    assert options == {"score_script": str(script), "model_dir": str(tmp_path), "expected_file": str(expected)}
    values["score_payload"] = str(tmp_path / "missing.json")
    with pytest.raises(pytest.UsageError, match=r"--score-payload .*no such file"):
        scoring.options_from_config(config)
    values["score_payload"] = None
    expected.write_text("{not json")
    with pytest.raises(pytest.UsageError, match=r"--score-expected .*not JSON"):
        scoring.options_from_config(config)


def test_add_options_declares_the_four_flags():
    seen = []
    scoring.add_options(SimpleNamespace(addoption=lambda flag, **kw: seen.append((flag, kw["help"]))))
    assert [flag for flag, _ in seen] == ["--score-script", "--model-dir", "--score-payload", "--score-expected"]
    assert all(len(text) > 40 for _, text in seen)


# -- the spec ------------------------------------------------------------------------------------------
def test_current_profile_runs_azmlinfsrv_as_azure_ml_lays_it_out(spec):
    assert spec.command == ("azmlinfsrv", "--entry_script", "/var/azureml-app/score.py", "--port", "5001")
    assert spec.env["AML_APP_ROOT"] == "/var/azureml-app"
    assert spec.env["AZUREML_ENTRY_SCRIPT"] == "/var/azureml-app/score.py"
    assert spec.env["AZUREML_MODEL_DIR"] == "/var/azureml-app/azureml-models/sample-model/1"
    assert set(spec.files) == {"var/azureml-app/score.py", "var/azureml-app/azureml-models/sample-model/1/model.json"}
    assert json.loads(spec.payload) == {"data": [[1, 2, 3], [0, 0, 0]]}  # FIXED_SAMPLE's rows
    assert json.loads(spec.expected_json) == {"result": [4.75, 0.25]}
    assert (spec.liveness_path, spec.score_path, spec.swagger_path) == ("/", "/score", "/swagger.json")


def run_sample(spec, tmp_path, monkeypatch) -> dict:
    """The built-in sample's run() on the spec's payload, with the model the spec copies into the container."""
    model_dir = tmp_path / "model"
    model_dir.mkdir(parents=True)
    prefix = "var/azureml-app/azureml-models/sample-model/1/"
    for name, data in spec.files.items():
        if name.startswith(prefix):
            (model_dir / name[len(prefix) :]).write_bytes(data)
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(model_dir))
    namespace: dict = {}
    exec(compile(scoring.SAMPLE_SCRIPT, "score.py", "exec"), namespace)
    namespace["init"]()
    return namespace["run"](spec.payload.decode())


def test_sample_script_gives_the_expected_answer_for_each_draw(profile, tmp_path, monkeypatch):
    """The built-in sample, the drawn model and the host's answer must agree to the bit, or every image fails."""
    for attempt in range(20):
        spec = scoring.build_spec(profile)
        answer = run_sample(spec, tmp_path / str(attempt), monkeypatch)
        assert scoring.body_problems(json.dumps(answer), spec) == [], (spec.sample, answer)
        assert json.loads(spec.expected_json) == answer  # exact equality: dyadic values, no rounding


def test_each_run_draws_its_own_model_and_payload(profile):
    """A constant answer (the old sample's [4.75, 0.25]) must not pass: the model and payload are drawn per run."""
    specs = [scoring.build_spec(profile) for _ in range(5)]
    assert len({s.payload for s in specs}) == 5
    assert len({s.files["var/azureml-app/azureml-models/sample-model/1/model.json"] for s in specs}) == 5
    assert all(scoring.body_problems('{"result": [4.75, 0.25]}', s) for s in specs)
    details = scoring.timing_details(ScoringObservation(spec=specs[0]))
    assert details["sample"]["seed"] == f"{specs[0].sample.seed:016x}"
    assert details["sample"]["result"] == json.loads(specs[0].expected_json)["result"]


def test_a_seed_gives_the_same_draw():
    assert scoring.Sample.draw(7) == scoring.Sample.draw(7) != scoring.Sample.draw(8)


def test_a_users_payload_with_the_sample_is_answered_by_the_drawn_model(profile, tmp_path):
    payload = tmp_path / "payload.json"
    payload.write_text('{"data": [[1, 1, 1]]}')
    spec = scoring.build_spec(profile, {"payload_file": str(payload)}, sample=FIXED_SAMPLE)
    assert json.loads(spec.expected_json) == {"result": [1.75]}
    payload.write_text('{"text": "hello"}')  # another shape: no exact answer, the profile's schema still applies
    other = scoring.build_spec(profile, {"payload_file": str(payload)}, sample=FIXED_SAMPLE)
    assert other.expected_json == "" and other.expected_schema is not None


def test_user_script_resets_the_samples_expectations(profile):
    own = scoring.build_spec(profile, {"score_script": str(FIXTURES / "score.py")})
    assert own.files["var/azureml-app/score.py"] == (FIXTURES / "score.py").read_bytes()
    assert not any("azureml-models" in name for name in own.files)  # no --model-dir: no sample model either
    assert own.expected_json == "" and own.expected_schema is None
    with_all = scoring.build_spec(
        profile,
        {
            "score_script": str(FIXTURES / "score.py"),
            "model_dir": str(FIXTURES / "model"),
            "payload_file": str(FIXTURES / "payload.json"),
            "expected_file": str(FIXTURES / "expected.json"),
        },
    )
    assert with_all.payload == (FIXTURES / "payload.json").read_bytes()
    assert json.loads(with_all.expected_json) == {"result": [5.0, -1.0]}
    assert "var/azureml-app/azureml-models/sample-model/1/model.json" in with_all.files


def test_2020_profile_is_skipped_honestly_not_passed():
    legacy = profiles.load("azureml-2020")
    result = check(legacy, None)
    assert result.status is Status.SKIPPED
    assert "cannot be reproduced offline" in result.reason
    assert "non-public" in result.reason
    assert scoring.observe_scoring(SimpleNamespace(profile=legacy)) is None


def test_disabled_scoring_is_not_required(profile):
    off = replace(profile, data={**profile.data, "scoring": {**profile.data["scoring"], "enabled": False}})
    assert check(off, None).reason == "not required by profile azureml-current"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('command = "azmlinfsrv"', "scoring.command: expected list of strings, got 'azmlinfsrv'"),
        ('port = "5001"', "scoring.port: expected integer 1 to 65535, got '5001'"),
        ('expected_json = "{nope"', "scoring.expected_json: not JSON text"),
        ('expected = { tpye = "object" }', "scoring.expected.tpye is not a known key (did you mean 'type'?)"),
        ('expected = { type = "dict" }', "scoring.expected.type: expected 'object', 'array'"),
    ],
)
def test_bad_scoring_settings_are_refused_when_the_profile_loads(tmp_path, change, message):
    path = tmp_path / "bad.toml"
    path.write_text(f'extends = "azureml-current"\n[scoring]\n{change}\n')
    with pytest.raises(ProfileError) as info:
        profiles.load(str(path))
    assert str(info.value).startswith(f"profile {path}: {message}")


def test_placeholders_fill_only_known_names(profile):
    custom = {**profile.data["scoring"], "command": ["srv", "{port}", "{other}"], "env": {"J": '{"a": 1}'}}
    spec = scoring.build_spec(replace(profile, data={**profile.data, "scoring": custom}))
    assert spec.command == ("srv", "5001", "{other}")
    assert spec.env == {"J": '{"a": 1}'}


# -- cause classification ------------------------------------------------------------------------------------
def test_pass_reports_boot_time_and_latency(profile, spec):
    result = check(profile, healthy(spec))
    assert result.status is Status.PASS, result.summary()
    assert result.details["boot_s"] == 0.6
    assert result.details["score_latency_s"] == 0.012
    assert result.details["create_to_score_s"] == 0.7
    assert "healthy after 0.60 s" in result.observed
    assert "log" not in result.details and "cause" not in result.details


@pytest.mark.parametrize(
    ("error", "cause"),
    [
        (
            "failed to create shim task: OCI runtime create failed: runc create failed: unable to start container "
            'process: exec: "azmlinfsrv": executable file not found in $PATH: unknown',
            "server-missing",
        ),
        ("something else broke", "server-exited"),
    ],
)
def test_start_errors(profile, spec, error, cause):
    result = check(profile, ScoringObservation(spec=spec, start_error=error, exit_code=127))
    assert result.status is Status.FAIL
    assert result.details["cause"] == cause
    if cause == "server-missing":
        assert '"azmlinfsrv": executable file not found in $PATH' in result.observed
        assert "pip install azureml-inference-server-http" in result.remediation


def test_exit_code_3_is_init_raised_with_the_users_exception(profile, spec):
    obs = ScoringObservation(
        spec=spec, exit_code=3, log=INIT_LOG, polls=12, last_liveness=Exchange("GET", "/", error="closed")
    )
    result = check(profile, obs)
    assert result.details["cause"] == "init-raised"
    assert result.details["exception"] == "RuntimeError: model file is corrupt"
    assert "RuntimeError: model file is corrupt" in result.observed
    assert result.details["exit_code"] == 3
    assert "Worker failed to boot" in result.details["log"]


@pytest.mark.parametrize(("code", "cause"), [(127, "server-missing"), (1, "server-exited"), (0, "server-exited")])
def test_other_exits(profile, spec, code, cause):
    assert check(profile, ScoringObservation(spec=spec, exit_code=code)).details["cause"] == cause


def test_out_of_memory_is_said(profile, spec):
    result = check(profile, ScoringObservation(spec=spec, exit_code=137, oom_killed=True))
    assert result.details["cause"] == "server-exited" and "too much memory" in result.observed


@pytest.mark.parametrize(
    ("last", "cause", "words"),
    [
        (None, "port-never-opened", "nothing answered on port 5001"),
        (Exchange("GET", "/", error="closed"), "port-never-opened", "nothing answered"),
        (Exchange("GET", "/", error="timeout"), "timeout", "is init() blocking"),
        (Exchange("GET", "/", status=502), "wrong-status", "still answered 502"),
    ],
)
def test_boot_deadline_causes(profile, spec, last, cause, words):
    obs = ScoringObservation(spec=spec, running=True, polls=40, last_liveness=last)
    result = check(profile, obs)
    assert result.details["cause"] == cause
    assert words in result.observed


def test_run_raised_from_500_and_the_log(profile, spec):
    obs = healthy(
        spec,
        status=500,
        body='{"message": "An unexpected error occurred in scoring script."}',
        headers={"x-ms-run-function-failed": "True"},
        log=RUN_LOG,
    )
    result = check(profile, obs)
    assert result.details["cause"] == "run-raised"
    assert result.details["exception"] == "ValueError: cannot score this input"
    assert result.details["score_status"] == 500
    assert "An unexpected error" in result.details["score_body"]


def test_a_500_without_a_traceback_is_a_wrong_status(profile, spec):
    result = check(profile, healthy(spec, status=503, body="busy"))
    assert result.details["cause"] == "wrong-status"
    assert "answered 503, expected 200" in result.observed


def test_4xx_is_wrong_status(profile, spec):
    assert check(profile, healthy(spec, status=422, body="{}")).details["cause"] == "wrong-status"


def test_score_without_answer_is_timeout(profile, spec):
    obs = healthy(spec)
    obs.score = Exchange("POST", "/score", error="timeout")
    assert check(profile, obs).details["cause"] == "timeout"


def test_connection_dropped_during_score_is_run_raised(profile, spec):
    obs = healthy(spec)
    obs.score = Exchange("POST", "/score", error="closed")
    result = check(profile, obs)
    assert result.details["cause"] == "run-raised" and "worker crashed" in result.observed


def test_wrong_body_is_bad_body(profile, spec):
    result = check(profile, healthy(spec, body='{"result": [4.75, 0.5]}'))
    assert result.details["cause"] == "bad-body"
    assert "differs from the expected" in result.observed


def test_swagger_status_is_checked_when_expected(profile, spec):
    assert check(profile, healthy(spec, swagger=500)).details["cause"] == "wrong-status"
    assert check(profile, healthy(spec, swagger=404)).status is Status.PASS
    unasked = replace(spec, swagger_expected=())
    obs = healthy(unasked, swagger=500)
    obs.swagger = None
    assert scoring.classify(obs) is None


# -- body checks ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "ok"),
    [
        ('{"result": [4.75, 0.25]}', True),
        ('{"result": [4.75, 0.25000]}', True),
        ('"{\\"result\\": [4.75, 0.25]}"', True),  # run() returned json.dumps(...): encoded twice
        ('{"result": [4.75]}', False),
        ('{"result": [4.75, 0.25], "extra": 1}', False),
        ("not json", False),
    ],
)
def test_exact_body(spec, body, ok):
    assert (scoring.body_problems(body, spec) == []) is ok


def test_a_json_string_expectation_is_not_unwrapped(spec):
    wants_string = replace(spec, expected_json='"{\\"a\\": 1}"', expected_schema=None)
    assert scoring.body_problems('"{\\"a\\": 1}"', wants_string) == []


def test_json_equality_keeps_booleans_apart():
    assert scoring.same_json({"a": [1, 2.0]}, {"a": [1.0, 2]})
    assert not scoring.same_json(True, 1)
    assert not scoring.same_json([0], [False])
    assert not scoring.same_json({"a": 1}, {"b": 1})


def test_schema_subset():
    schema = {
        "type": "object",
        "required": ["result", "model"],
        "properties": {
            "result": {"type": "array", "items": {"type": "number"}},
            "model": {"enum": ["a", "b"]},
            "ok": {"const": True},
        },
    }
    assert scoring.schema_problems({"result": [1, 2.5], "model": "a", "ok": True}, schema) == []
    problems = scoring.schema_problems({"result": [1, "x", True], "ok": 1}, schema)
    assert problems == [
        "$ has no key 'model'",
        "$.result[1] is string, expected number",
        "$.result[2] is boolean, expected number",
        "$.ok is 1, expected true",
    ]
    assert scoring.schema_problems([], {"type": ["object", "null"]}) == ["$ is array, expected object or null"]


def test_schema_only_expectation(spec):
    schema_only = replace(spec, expected_json="", expected_schema={"type": "object", "required": ["result"]})
    assert scoring.body_problems('{"result": 1}', schema_only) == []
    assert scoring.body_problems('{"other": 1}', schema_only) == ["$ has no key 'result'"]
    assert scoring.body_problems("anything", replace(spec, expected_json="", expected_schema=None)) == []


# -- logs --------------------------------------------------------------------------------------------------
def test_log_is_cut_cleaned_and_bounded():
    noisy = "".join(f"\x1b[31mline {i}\x1b[0m\r\n" for i in range(200)) + "bell\x07 \x1b]0;title\x07end"
    text = scoring.clean_log(noisy)
    lines = text.splitlines()
    assert len(lines) == scoring.LOG_LINES
    assert lines[0] == "line 151" and lines[-1] == "bell end"
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    huge = scoring.clean_log("x" * 10_000 + "\n" + "y" * 100)
    assert len(huge.splitlines()[0]) == scoring.LOG_LINE_CHARS
    assert len(scoring.clean_log(("z" * 399 + "\n") * 50)) <= scoring.LOG_CHARS + 60


def test_exception_lines_find_each_traceback_end():
    assert scoring.exception_lines(INIT_LOG) == [
        "RuntimeError: model file is corrupt",
        "azureml_inference_server_http.server.user_script.UserScriptException: Caught an unhandled exception "
        "from the user script",
    ]
    assert scoring.user_exception(INIT_LOG) == "RuntimeError: model file is corrupt"
    assert scoring.user_exception("no traceback here") == ""


# -- the in-container client's answer: untrusted output, parsed defensively ---------------------------------
def test_proc_net_addresses_are_read_as_the_kernel_writes_them():
    from pytest_baseimage.scoring_client import listen_address

    assert listen_address("00000000") == "0.0.0.0"
    assert listen_address("0100007F") == "127.0.0.1"
    assert listen_address("0200A8C0") == "192.168.0.2"
    assert listen_address("00000000000000000000000000000000") == "::"
    assert listen_address("00000000000000000000000001000000") == "::1"
    assert listen_address("0000000000000000FFFF00000100007F") == "::ffff:127.0.0.1"
    assert listen_address("zz") == "" and listen_address("0100007") == ""


@pytest.mark.parametrize(
    ("addresses", "only"),
    [
        (["127.0.0.1"], True),
        (["127.0.0.1", "::1"], True),
        (["::ffff:127.0.0.1"], True),
        (["0.0.0.0"], False),
        (["127.0.0.1", "::"], False),  # also on every IPv6 address: reachable
        ([], False),  # not seen: never accuse the server of what was not observed
        (["not an address"], False),
    ],
)
def test_loopback_only_needs_every_listener_on_loopback(addresses, only):
    from pytest_baseimage.scoring_client import loopback_only

    assert loopback_only(addresses) is only


def test_the_answer_is_found_after_its_marker_and_only_there():
    from pytest_baseimage.probe import last_marked_json as parse_answer

    marker = "@@m@@"
    assert parse_answer('noise\n@@m@@{"polls": 3}\n', marker) == {"polls": 3}
    assert parse_answer('{"polls": 3}\n', marker) is None  # no marker: a killed client
    assert parse_answer("@@m@@{not json\n", marker) is None
    assert parse_answer("@@m@@[1, 2]\n", marker) is None


def test_a_hostile_answer_cannot_forge_types_or_sizes(spec):
    obs = ScoringObservation(spec=spec)
    answer = {
        "polls": True,
        "healthy_after_s": float("inf"),
        "score_done_s": -1,
        "liveness": {"method": "GET" * 100, "path": "/", "status": "200", "body": 7},
        "score": {"status": 200, "headers": {"X-Big": "v" * 5000}, "body": "b" * (scoring.BODY_READ_BYTES + 10)},
        "swagger": ["not", "a", "dict"],
        "listen": ["00000000", 5, "0100007F"] + ["00000000"] * 100,
    }
    scoring._read_answer(obs, answer, 0.1, 0.2)
    assert obs.polls == 0 and obs.healthy is False and obs.boot_s is None and obs.create_to_score_s is None
    assert obs.last_liveness.status is None and obs.last_liveness.body == "7" and len(obs.last_liveness.method) == 10
    assert len(obs.score.headers["x-big"]) == 1000 and len(obs.score.body) == scoring.BODY_READ_BYTES
    assert obs.swagger is None
    assert obs.listen[:2] == ["0.0.0.0", "127.0.0.1"] and len(obs.listen) == 64  # strings only, 64 at most


def test_a_healthy_answer_becomes_the_observation(spec):
    obs = ScoringObservation(spec=spec)
    answer = {
        "polls": 4,
        "healthy_after_s": 0.5,
        "score_done_s": 0.6,
        "liveness": {"method": "GET", "path": "/", "status": 200, "body": "Healthy", "elapsed_s": 0.01},
        "score": {"method": "POST", "path": "/score", "status": 200, "body": '{"result": [4.75, 0.25]}'},
        "swagger": {"method": "GET", "path": "/swagger.json", "status": 404},
        "listen": ["00000000"],
    }
    scoring._read_answer(obs, answer, offset=0.1, since_create=0.3)
    obs.running = True
    assert (obs.polls, obs.healthy) == (4, True)
    assert (obs.boot_s, obs.create_to_score_s) == (pytest.approx(0.6), pytest.approx(0.9))
    assert scoring.classify(obs) is None
    obs.listen = ["127.0.0.1"]
    assert scoring.classify(obs).name == "loopback-only"


def test_a_client_that_could_not_ask_leaves_the_stage_unchecked(profile, spec):
    obs = ScoringObservation(spec=spec, running=True, client_error="no python3 or python on the image's PATH")
    result = scoring.check_scoring(Facts(), profile, obs)
    assert result.status is Status.ERROR and "could not exercise the server: no python3" in result.reason
    obs.running, obs.exit_code = False, 1  # but a server that died is judged by how it died
    assert scoring.check_scoring(Facts(), profile, obs).details["cause"] == "server-exited"


def test_the_network_is_none_unless_the_profile_says_bridge(profile, tmp_path):
    assert scoring.build_spec(profile).network == "none"
    for value, ok in (("bridge", True), ("host", False), (1, False)):
        path = tmp_path / "p.toml"
        path.write_text(f'extends = "azureml-current"\n[scoring]\nnetwork = {json.dumps(value)}\n')
        if ok:
            assert scoring.build_spec(profiles.load(str(path))).network == value
        else:
            with pytest.raises(ProfileError, match=r"scoring\.network: expected 'none' or 'bridge'"):
                profiles.load(str(path))


def test_shipped_profiles_carry_no_payload_or_answer_that_the_sample_would_ignore():
    """Without a score_script of their own, a payload or expected_json in a profile is dead: never read."""
    for path in sorted((ROOT / "pytest_baseimage" / "profiles").glob("*.toml")):
        section = profiles.tomllib.loads(path.read_text(encoding="utf-8")).get("scoring") or {}
        if not section.get("score_script"):
            dead = {"payload", "payload_file", "expected_json"} & set(section)
            assert not dead, f"{path.name}: {sorted(dead)}"


def test_a_user_profile_with_its_own_script_keeps_its_payload_and_answer(tmp_path):
    (tmp_path / "score.py").write_bytes((FIXTURES / "score.py").read_bytes())
    (tmp_path / "own.toml").write_text(
        'name = "own"\nextends = "azureml-current"\n[scoring]\nscore_script = "score.py"\n'
        "payload = { data = [[2, 2]] }\nexpected_json = '{\"result\": [7]}'\n"
    )
    spec = scoring.build_spec(profiles.load(str(tmp_path / "own.toml")))
    assert spec.sample is None
    assert json.loads(spec.payload) == {"data": [[2, 2]]}
    assert json.loads(spec.expected_json) == {"result": [7]}


def test_a_users_model_with_the_sample_script_gets_a_drawn_payload_and_only_the_schema(profile):
    spec = scoring.build_spec(profile, {"model_dir": str(FIXTURES / "model")}, sample=FIXED_SAMPLE)
    assert spec.files["var/azureml-app/score.py"] == scoring.SAMPLE_SCRIPT
    assert json.loads(spec.payload) == {"data": [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]}  # the draw's, not a constant
    assert spec.expected_json == "" and spec.expected_schema is not None
