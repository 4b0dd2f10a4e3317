"""Profiles: built-ins load, `extends` merges, bad files give one clear error."""

from __future__ import annotations

import pytest

from pytest_baseimage import profiles
from pytest_baseimage.errors import ProfileError
from pytest_baseimage.profiles import spec_list, version_matches


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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[os\naccept=1", "not valid TOML"),
        ('[python]\nversoin = ">=3"\n', "unknown field 'python.versoin'"),
        ('colour = "red"\n', "unknown field 'colour'"),
        ('[python]\nversion = ">=three"\n', "not a valid version specifier"),
        ('[os]\naccept = [{ version = ">=1" }]\n', "os.accept[0]"),
        ('extends = "no-such-profile"\n', "unknown profile 'no-such-profile'"),
        ('[apt]\nrequired = "curl"\n', "apt.required must be a list"),
        ("python = 3\n", "[python] must be a table"),
    ],
)
def test_bad_profiles_give_one_clear_line(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as info:
        profiles.load(str(path))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


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
