"""The composition root: one ordered, checked declaration of the stages, and the hook that extends it."""

from __future__ import annotations

import pytest
from conftest import run_pytest

from pytest_baseimage import profiles
from pytest_baseimage.composition import BUILTIN, STAGE_ORDER, Composition, CompositionError
from pytest_baseimage.results import StageResult, Status
from pytest_baseimage.stages import Stage


def _check(facts, profile, observation):
    return StageResult("extra", Status.PASS)


def test_the_builtin_stages_run_in_their_declared_order_each_after_its_prerequisites():
    assert STAGE_ORDER == ("os", "conda", "python", "apt", "azureml", "scoring", "deployment", "gpu")
    for index, stage in enumerate(BUILTIN.stages):
        assert all(STAGE_ORDER.index(p) < index for p in stage.prerequisites), stage.name


def test_an_added_stage_comes_after_the_builtin_ones():
    extended = BUILTIN.with_stages([Stage("extra", "Extra", ("python",), _check)])
    assert extended.names == (*STAGE_ORDER, "extra")
    assert [s.name for s in extended.added] == ["extra"] and BUILTIN.added == ()
    assert extended.ordered({"extra", "os", "nope"}) == ["os", "extra"]


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        (Stage("os", "Again", (), _check), "stage 'os' is declared twice"),
        (Stage("extra", "Extra", ("later",), _check), "stage 'extra' needs later, which no earlier stage is"),
        (Stage("bad name", "Extra", (), _check), "is not an identifier"),
        ("extra", "'extra' is not a pytest_baseimage.stages.Stage"),
    ],
)
def test_a_stage_set_that_cannot_run_is_refused(stage, message):
    with pytest.raises(CompositionError, match=message):
        BUILTIN.with_stages([stage])


def test_an_unknown_stage_is_an_error_never_silently_dropped():
    with pytest.raises(KeyError, match="unknown stage 'nope'"):
        BUILTIN.get("nope")


@pytest.mark.parametrize("name", profiles.builtin_names())
def test_the_probe_asks_what_the_stages_declare_exactly_as_before(name):
    """The request the runner built by hand before the composition root (imports, then apt files)."""
    profile = profiles.load(name)
    apt = profile.section("apt") or {}
    request = BUILTIN.probe_request(profile)
    assert request.imports == [str(m) for m in (profile.section("azureml") or {}).get("imports", [])]
    assert request.apt == [str(p) for p in [*apt.get("required", []), *(n for g in apt.get("any_of", []) for n in g)]]


def test_a_plugin_stage_that_clashes_is_a_usage_error_before_anything_starts(tmp_path):
    (tmp_path / "conftest.py").write_text(
        "from pytest_baseimage.results import StageResult\n"
        "from pytest_baseimage.stages import Stage\n"
        "def pytest_baseimage_stages(config):\n"
        "    return [Stage('os', 'Mine', (), lambda *a: StageResult('os', 'pass'))]\n"
    )
    verdict = tmp_path / "v.json"
    proc = run_pytest("--base-image=never-looked-at:1", f"--compat-json={verdict}", cwd=tmp_path)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "pytest_baseimage_stages: stage 'os' is declared twice" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert verdict.exists()


def test_composition_is_immutable():
    with pytest.raises(AttributeError):
        BUILTIN.stages = ()  # type: ignore[misc]
    assert isinstance(BUILTIN, Composition)
