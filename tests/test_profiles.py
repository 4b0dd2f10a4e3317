"""Profiles: built-ins load, `extends` merges, the whole profile is checked against one schema when it
loads, abstract profiles are refused, fixes follow the rule they fix, and the reference is generated."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_baseimage import profile_reference, profile_schema, profiles, scoring
from pytest_baseimage.errors import ProfileError
from pytest_baseimage.profiles import spec_list, version_matches

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_PROFILES = sorted((ROOT / "fixtures" / "profiles").glob("*.toml"))


def refusal(tmp_path: Path, text: str, name: str = "bad.toml") -> str:
    """The one-line error for a profile file with this text."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        profiles.load(str(path))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith((f"profile {path}", f"profile {name[:-5]} "))  # names the file (or profile)
    return message.removeprefix(f"profile {path}: ")


# -- loading and extends -----------------------------------------------------------------------------------
def test_builtins_load_and_cite_sources():
    for name in ("azureml-2020", "azureml-current"):
        profile = profiles.load(name)
        assert profile.name == name
        assert profile.sources, f"{name} must cite where its requirements come from"
        assert profile.chain == [name, "base"]


def test_2020_requirements_are_the_documented_ones():
    profile = profiles.load("azureml-2020")
    (rule,) = profile.os_rules()
    assert rule.id == "ubuntu"
    assert version_matches("16.04", rule.version) and not version_matches("14.04", rule.version)
    python = profile.specs("python")
    assert [version_matches(v, python) for v in ("3.5.2", "3.6.9", "3.7.0", "2.7.18")] == [True, True, False, False]
    assert version_matches("4.5.11", profile.specs("conda")) and not version_matches("4.4.10", profile.specs("conda"))
    assert "azureml-defaults" in profile.packages("azureml", "packages")


def test_user_profile_extends_and_overrides_one_requirement(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('extends = "azureml-current"\n[python]\nversion = ">=3.11"\n')
    profile = profiles.load(str(path))
    assert profile.name == "mine"
    assert profile.chain == ["mine", "azureml-current", "base"]
    assert not version_matches("3.10.4", profile.specs("python"))
    # everything not overridden is inherited, including texts from the base profile
    assert "nginx-light" in profile.section("apt")["required"]
    assert "pip install" in profile.remediation("azureml")


def test_extends_a_relative_path(tmp_path):
    (tmp_path / "parent.toml").write_text('extends = "azureml-2020"\n[conda]\nversion = ">=23"\n')
    (tmp_path / "child.toml").write_text('extends = "parent.toml"\n')
    profile = profiles.load(str(tmp_path / "child.toml"))
    assert profile.chain == ["child", "parent", "azureml-2020", "base"]
    assert not version_matches("4.5.11", profile.specs("conda"))


def test_a_stage_can_be_switched_off(tmp_path):
    path = tmp_path / "noconda.toml"
    path.write_text('extends = "azureml-current"\nconda = false\n')
    assert profiles.load(str(path)).section("conda") is None


def test_cycles_and_missing_files(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\n')
    with pytest.raises(ProfileError, match="extends itself"):
        profiles.load(str(tmp_path / "a.toml"))
    with pytest.raises(ProfileError, match="does not exist"):
        profiles.load(str(tmp_path / "missing.toml"))


def test_any_of_specifiers():
    specs = spec_list(["==3.5.*", "==3.6.*"], "test")
    assert version_matches("3.6.15", specs)
    assert not version_matches("3.7.1", specs)
    assert not version_matches("not-a-version", specs)


# -- one schema, checked at load time -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        # the example: a typo inside an accept entry used to widen the rule to "any Ubuntu"
        (
            '[os]\naccept = [{ id = "ubuntu", verison = ">=99" }]\n',
            "os.accept[0].verison is not a known key (did you mean 'version'?)",
        ),
        ('colour = "red"\n', "colour is not a known key (known: name, description, extends, abstract,"),
        ("abstrct = true\n", "abstrct is not a known key (did you mean 'abstract'?)"),
        ('[python]\nversoin = ">=3"\n', "python.versoin is not a known key (did you mean 'version'?)"),
        ("[scoring]\nboot_timeout = 5\n", "scoring.boot_timeout is not a known key (did you mean 'boot_timeout_s'?)"),
        (
            '[scoring]\nexpected = { requried = ["result"] }\n',
            "scoring.expected.requried is not a known key (did you mean 'required'?)",
        ),
        (
            '[scoring.expected.properties.result]\ntpye = "array"\n',
            "scoring.expected.properties.result.tpye is not a known key (did you mean 'type'?)",
        ),
        (
            "[scoring.expected]\nitems = { enmu = [1] }\n",
            "scoring.expected.items.enmu is not a known key (did you mean 'enum'?)",
        ),
        ('[gpu]\nprovider = ["CPUExecutionProvider"]\n', "gpu.provider is not a known key (did you mean 'providers'?)"),
        ("[probe]\ntimeout = 5\n", "probe.timeout is not a known key (did you mean 'timeout_s'?)"),
        ('[image]\nplatform = ["linux/amd64"]\n', "image.platform is not a known key (did you mean 'platforms'?)"),
    ],
)
def test_unknown_keys_at_every_depth_are_refused_with_the_nearest_name(tmp_path, text, message):
    assert refusal(tmp_path, 'extends = "azureml-current"\n' + text).startswith(message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[os\naccept=1", "is not valid TOML"),
        ('[scoring]\nboot_timeout_s = "soon"\n', "scoring.boot_timeout_s: expected number > 0, got 'soon'"),
        ("[scoring]\nboot_timeout_s = 0\n", "scoring.boot_timeout_s: expected number > 0, got 0"),
        ("[scoring]\nrequest_timeout_s = -1.5\n", "scoring.request_timeout_s: expected number > 0, got -1.5"),
        ('[scoring]\ncommand = "azmlinfsrv --port 5001"\n', "scoring.command: expected list of strings, got"),
        ("[scoring]\ncommand = []\n", "scoring.command: must not be empty"),
        ("[scoring]\nport = 0\n", "scoring.port: expected integer 1 to 65535, got 0"),
        ("[scoring]\nport = 70000\n", "scoring.port: expected integer 1 to 65535, got 70000"),
        ('[scoring]\nport = "5001"\n', "scoring.port: expected integer 1 to 65535, got '5001'"),
        ('[scoring]\nnetwork = "host"\n', "scoring.network: expected 'none' or 'bridge', got 'host'"),
        ("[scoring]\nexpected_status = 42\n", "scoring.expected_status: expected integer 100 to 599, got 42"),
        ("[scoring]\nswagger_expected = [200, 999]\n", "scoring.swagger_expected[1]: expected integer 100 to 599"),
        ('[scoring]\nexpected_json = "{nope"\n', "scoring.expected_json: not JSON text"),
        ('[scoring]\nexpected = { type = "dict" }\n', "scoring.expected.type: expected 'object', 'array'"),
        ('[scoring]\nscore_path = "score"\n', "scoring.score_path: 'score' must start with '/'"),
        ("[scoring]\nenv = { WORKER_TIMEOUT = 300 }\n", "scoring.env.WORKER_TIMEOUT: expected string, got 300"),
        ('[scoring]\nenabled = "yes"\n', "scoring.enabled: expected true/false, got 'yes'"),
        ('[python]\nversion = ">=three"\n', "python.version: '>=three' is not a valid version specifier (PEP 440)"),
        ('[python]\nversion = ["==3.6.*", "3.7"]\n', "python.version[1]: '3.7' is not a valid version specifier"),
        ("[python]\nversion = []\n", "python.version: must not be empty"),
        ('[os]\naccept = [{ version = ">=1" }]\n', "os.accept[0].id is required"),
        (
            '[os]\naccept = [{ id = "ubuntu", version = ">=20.04,<<24" }]\n',
            "os.accept[0].version: '>=20.04,<<24' is not",
        ),
        ('[azureml]\npackages = { "azureml-defaults" = "latest" }\n', "azureml.packages.azureml-defaults: 'latest'"),
        ('[apt]\nrequired = "curl"\n', "apt.required: expected list of strings, got 'curl'"),
        ('[apt]\nany_of = [["a", ""]]\n', "apt.any_of[0][1]: must not be empty"),
        ("python = 3\n", "[python] must be a table (or false to switch the stage off), got 3"),
        ("conda = true\n", "[conda] must be a table (or false to switch the stage off), got True"),
        ('sources = "a paper"\n', "sources: expected list of strings, got 'a paper'"),
        ('abstract = "no"\n', "abstract: expected true/false, got 'no'"),
        ("[probe]\ntimeout_s = 0\n", "probe.timeout_s: expected number > 0, got 0"),
        ('[gpu]\nproviders = "CUDAExecutionProvider"\n', "gpu.providers: expected list of strings"),
        ('[gpu]\nproviders = ["CUDA"]\n', "gpu.providers[0]: 'CUDA' is not of the form <Name>ExecutionProvider"),
        ("[gpu]\ntimeout_s = -1\n", "gpu.timeout_s: expected number > 0, got -1"),
        ('[gpu]\nproviders = ["CUDAExecutionProvider"]\ndevice_type = "CPU"\n', "gpu.device_type: only OpenVINO"),
        ('[gpu]\ndevice_type = "TPU"\n', "gpu.device_type: 'TPU' is not an OpenVINO device type"),
        ('[image]\nplatforms = ["amd64"]\n', "image.platforms[0]: 'amd64' is not of the form os/arch[/variant]"),
        ('[image]\nplatforms = "linux/amd64"\n', "image.platforms: expected list of strings"),
    ],
)
def test_bad_values_are_refused_with_the_key_path_and_what_was_expected(tmp_path, text, message):
    assert message in refusal(tmp_path, 'extends = "azureml-current"\n' + text)


def test_the_merged_profile_is_checked_as_a_whole(tmp_path):
    # no command anywhere in the chain, while the stage is enabled and reproducible
    alone = refusal(tmp_path, "[scoring]\nport = 8080\n", "alone.toml")
    assert alone.startswith("scoring.command: required when the stage is enabled and reproducible")
    # a file the profile names must exist, relative to the profile
    missing = refusal(tmp_path, 'extends = "azureml-current"\n[scoring]\nscore_script = "nope.py"\n')
    assert missing == f"scoring.score_script: no such file {tmp_path / 'nope.py'}"
    (tmp_path / "payload.json").write_text("{not json")
    payload = refusal(tmp_path, 'extends = "azureml-current"\n[scoring]\npayload_file = "payload.json"\n')
    assert payload.startswith(f"scoring.payload_file: {tmp_path / 'payload.json'}: not JSON")


def test_an_error_names_the_file_that_has_it(tmp_path):
    (tmp_path / "parent.toml").write_text('extends = "azureml-current"\n[scoring]\nport = "80"\n')
    (tmp_path / "child.toml").write_text('extends = "parent.toml"\n')
    with pytest.raises(ProfileError) as info:
        profiles.load(str(tmp_path / "child.toml"))
    assert str(info.value) == f"profile {tmp_path / 'parent.toml'}: scoring.port: expected integer 1 to 65535, got '80'"


def test_every_shipped_and_fixture_profile_validates():
    for name in profiles.builtin_names(include_abstract=True):
        profile_schema.validate(profiles.load(name, allow_abstract=True).data, merged=True)
    for path in FIXTURE_PROFILES:
        profiles.load(str(path))


# -- new keys other parts read ------------------------------------------------------------------------------
def test_probe_image_and_gpu_settings_have_defaults_and_overrides(tmp_path):
    current = profiles.load("azureml-current")
    assert current.setting("probe", "timeout_s") == 30.0
    assert current.setting("image", "platforms") == ["linux/amd64"]  # from base: Azure ML runs linux/amd64
    assert current.setting("gpu", "timeout_s") is None
    path = tmp_path / "slow.toml"
    path.write_text(
        'extends = "onnxruntime-cuda"\n[probe]\ntimeout_s = 90\n[image]\nplatforms = []\n[gpu]\ntimeout_s = 600.5\n'
    )
    slow = profiles.load(str(path))
    assert (slow.setting("probe", "timeout_s"), slow.setting("gpu", "timeout_s")) == (90, 600.5)
    assert slow.setting("image", "platforms") == []


# -- abstract profiles --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "use"),
    [
        ("base", "azureml-2020, azureml-current or azureml-custom-container"),
        ("onnxruntime-base", "onnxruntime-cpu, onnxruntime-cuda or"),
    ],
)
def test_an_abstract_profile_is_refused_as_a_runs_profile(name, use):
    with pytest.raises(ProfileError) as info:
        profiles.load(name)
    assert str(info.value).startswith(f"profile {name} is abstract: it is meant to be extended; use {use}")
    assert profiles.load(name, allow_abstract=True).abstract


def test_abstract_profiles_are_not_offered_and_abstract_is_not_inherited(tmp_path):
    assert {"base", "onnxruntime-base"}.isdisjoint(profiles.builtin_names())
    assert {"base", "onnxruntime-base"} <= set(profiles.builtin_names(include_abstract=True))
    assert "azureml-current" in profiles.builtin_names()
    assert not profiles.load("onnxruntime-cpu").abstract  # extends the abstract onnxruntime-base
    own = tmp_path / "mine.toml"
    own.write_text('extends = "base"\n[os]\naccept = [{ id = "ubuntu" }]\n')
    assert not profiles.load(str(own)).abstract
    own.write_text('extends = "azureml-current"\nabstract = true\n')
    with pytest.raises(ProfileError, match="profile mine is abstract"):
        profiles.load(str(own))


# -- remediation follows the rule it fixes -----------------------------------------------------------------
def concrete_profiles() -> list[profiles.Profile]:
    shipped = [profiles.load(name) for name in profiles.builtin_names()]
    return shipped + [profiles.load(str(path)) for path in FIXTURE_PROFILES]


def test_every_version_a_fix_suggests_satisfies_the_same_profile():
    checked = 0
    for profile in concrete_profiles():
        for distro, version in re.findall(r"FROM ([a-z]+):([0-9.]+)", profile.remediation("os")):
            rules = [rule for rule in profile.os_rules() if rule.id == distro]
            refused = f"{profile.name}: the os fix suggests {distro}:{version}, which it refuses"
            assert any(version_matches(version, rule.version) for rule in rules), refused
            checked += 1
        for version in re.findall(r"python=([0-9.]+)", profile.remediation("python")):
            assert version_matches(version, profile.specs("python")), f"{profile.name}: python={version}"
            checked += 1
        for version in re.findall(r"conda[ =]+([0-9][0-9.]*)", profile.remediation("conda")):
            assert version_matches(version, profile.specs("conda")), f"{profile.name}: conda {version}"
            checked += 1
        assert "{" not in profile.remediation("os") + profile.remediation("python")  # every placeholder filled
    # an os and a python suggestion in every profile that has os and python rules (a custom container has neither)
    assert checked >= 2 * len([p for p in concrete_profiles() if p.os_rules() and p.section("python")])


def test_fixes_name_the_profiles_own_versions():
    current = profiles.load("azureml-current")
    assert "conda install -y python=3.8`" in current.remediation("python")  # it needs >= 3.8, not 3.6
    assert "FROM ubuntu:20.04" in current.remediation("os")
    fixture = profiles.load(str(ROOT / "fixtures" / "profiles" / "fixture.toml"))
    assert "FROM debian:12" in fixture.remediation("os")  # it accepts Debian first
    assert "python=3.11" in fixture.remediation("python")


def test_a_fix_with_no_known_release_says_what_is_needed(tmp_path):
    path = tmp_path / "future.toml"
    path.write_text('extends = "azureml-current"\n[os]\naccept = [{ id = "alpine", version = ">=3.20" }]\n')
    assert "<an accepted distribution: alpine >=3.20>" in profiles.load(str(path)).remediation("os")


# -- --score-payload is checked before anything starts ------------------------------------------------------
def test_a_malformed_score_payload_is_a_usage_error(tmp_path):
    from types import SimpleNamespace

    bad = tmp_path / "payload.json"
    bad.write_text('{"data": [[1, 2, 3]')
    target = SimpleNamespace(profile=profiles.load("azureml-current"), options={"scoring": {"payload_file": str(bad)}})
    with pytest.raises(scoring.ScoringUsageError) as info:
        scoring.validate_targets([target])
    assert info.value.exit_code == 4
    assert str(info.value).startswith(f"--score-payload {bad}: not JSON (")
    assert str(info.value).endswith("the profile sends it as application/json")
    bad.write_text('{"data": [[1, 2, 3]]}')
    scoring.validate_targets([target])
    text = tmp_path / "text.toml"
    text.write_text('extends = "azureml-current"\n[scoring]\ncontent_type = "text/plain"\n')
    bad.write_text("plain words")
    scoring.validate_targets([SimpleNamespace(profile=profiles.load(str(text)), options=target.options)])


# -- the schema and the code that reads it agree --------------------------------------------------------------
def test_the_expected_schema_types_are_the_ones_the_scoring_check_knows():
    assert set(profile_schema.JSON_TYPES) == set(scoring.SCHEMA_TYPES)


def test_the_committed_reference_is_the_generated_one():
    committed = (ROOT / "docs" / "profiles.md").read_text(encoding="utf-8")
    assert committed == profile_reference.render(), (
        "docs/profiles.md is stale: python -m pytest_baseimage.profile_reference > docs/profiles.md"
    )


def test_the_reference_covers_every_key_and_its_example_loads(tmp_path):
    text = profile_reference.render()
    for model in (profile_schema.ProfileModel, *profile_schema.SECTIONS.values(), profile_schema.OsRule):
        for key in model.model_fields:
            assert f"| `{key}` |" in text, key
    example = re.search(r"```toml\n(.*?)```", text, re.S).group(1)
    path = tmp_path / "company.toml"
    path.write_text(example)
    company = profiles.load(str(path))
    assert company.chain == ["company", "azureml-current", "base"]
    assert "conda install -y python=3.10`" in company.remediation("python")  # as the reference says
    assert company.setting("scoring", "command") == profiles.load("azureml-current").setting("scoring", "command")
