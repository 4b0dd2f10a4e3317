"""Profiles the schema passed before are not checked again; errors, and checks that read the disk, always are."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import FIXTURE_PROFILE

from pytest_baseimage import profile_cache, profiles
from pytest_baseimage.errors import ProfileError


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "pytest-baseimage" / "valid-profiles"


LOAD_AND_SAY = (
    "import sys; from pytest_baseimage import profiles; profiles.load(sys.argv[1]); print('pydantic' in sys.modules)"
)


def test_a_profile_passed_before_is_not_checked_again_by_a_new_process(store, tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    runs = [
        subprocess.run(
            [sys.executable, "-c", LOAD_AND_SAY, str(FIXTURE_PROFILE)], env=env, capture_output=True, text=True
        )
        for _ in range(2)
    ]
    assert [r.stdout.strip() for r in runs] == ["True", "False"], [r.stderr for r in runs]
    assert len(store.read_text().split()) == 4  # fixture.toml, azureml-current, base (abstract), the merge


def test_an_error_is_never_remembered(store, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\nextends = "azureml-current"\n[os]\naccept = [{ id = "ubuntu", verison = ">=99" }]\n')
    for _ in range(2):
        with pytest.raises(ProfileError, match="verison"):
            profiles.load(str(bad))


def test_one_changed_value_is_checked_again(store, tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('name = "p"\nextends = "azureml-current"\n[probe]\ntimeout_s = 10.0\n')
    profiles.load(str(path))
    path.write_text('name = "p"\nextends = "azureml-current"\n[probe]\ntimeout_s = -10.0\n')
    with pytest.raises(ProfileError, match="timeout_s"):
        profiles.load(str(path))


def test_a_profile_naming_files_is_checked_against_the_disk_every_time(store, tmp_path):
    script = tmp_path / "score.py"
    script.write_text("def init():\n    pass\n")
    path = tmp_path / "p.toml"
    path.write_text(
        'name = "p"\nextends = "azureml-current"\n[scoring]\nscore_script = "score.py"\n'
        'payload = "{}"\nexpected_json = "{}"\n'
    )
    profiles.load(str(path))
    script.unlink()
    with pytest.raises(ProfileError, match="no such file"):
        profiles.load(str(path))


def test_another_schema_or_library_version_checks_again(store, monkeypatch):
    data = {"name": "x"}
    profile_cache.remember(profile_cache.key(data, False))
    assert profile_cache.known(profile_cache.key(data, False))
    assert not profile_cache.known(profile_cache.key(data, True))
    monkeypatch.setattr(profile_cache, "_schema_fingerprint", lambda: "another schema")
    assert not profile_cache.known(profile_cache.key(data, False))


def test_a_store_that_cannot_be_written_only_means_checking_every_time(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert profiles.load(str(FIXTURE_PROFILE)).name == "fixture"
    assert not profile_cache.known(profile_cache.key({"name": "fixture"}, False))


def test_the_store_starts_again_past_its_bound(store):
    store.parent.mkdir(parents=True)
    store.write_bytes(b"0" * 64 + b"\n" + b"f" * profile_cache.MAX_BYTES)
    profile_cache.remember("abc")
    assert store.read_bytes() == b"abc\n"
