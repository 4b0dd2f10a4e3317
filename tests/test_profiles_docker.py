"""A bad profile is refused before the engine is asked anything: exit 4, one line, no container.

The engine is reached through a counting proxy, so "no engine call" is measured, not assumed; the same
run with a good profile goes through the proxy and starts the candidate, which proves the count can move.
"""

from __future__ import annotations

import pytest
from conftest import FIXTURE_PROFILE, run_pytest
from engine_proxy import EngineProxy

pytestmark = pytest.mark.docker


@pytest.mark.parametrize(
    ("profile", "line"),
    [
        (
            '[os]\naccept = [{ id = "debian", verison = ">=99" }]\n',
            "os.accept[0].verison is not a known key (did you mean 'version'?)",
        ),
        ('[scoring]\nboot_timeout_s = "soon"\n', "scoring.boot_timeout_s: expected number > 0, got 'soon'"),
        ('[scoring]\ncommand = "azmlinfsrv --port 5001"\n', "scoring.command: expected list of strings"),
    ],
)
def test_a_bad_profile_exits_4_before_any_engine_call(tmp_path, images, no_leaks, profile, line):
    image = images("good")
    bad = tmp_path / "company.toml"
    bad.write_text(f'extends = "{FIXTURE_PROFILE}"\n{profile}')
    proxy = EngineProxy("127.0.0.1")
    try:
        env = {"DOCKER_HOST": proxy.url}
        refused = run_pytest(f"--base-image={image}", f"--base-image-profile={bad}", "-q", cwd=tmp_path, env=env)
        assert proxy.connections == 0, "the engine was asked before the profile was checked"
        good = run_pytest(f"--base-image={image}", f"--base-image-profile={FIXTURE_PROFILE}", "-q", "-k", "os",
                          cwd=tmp_path, env=env, timeout=300)  # fmt: skip
    finally:
        proxy.close()
    output = refused.stdout + refused.stderr
    assert refused.returncode == 4, output
    errors = [text for text in output.splitlines() if text.strip()]
    assert len(errors) == 1 and errors[0].startswith(f"ERROR: profile {bad}: {line}"), output  # the file, the key
    assert good.returncode == 0, good.stdout + good.stderr
    assert proxy.connections > 0  # the control run went through the proxy: the count above could have moved


def test_an_abstract_profile_is_refused_before_any_engine_call(tmp_path, images, no_leaks):
    proxy = EngineProxy("127.0.0.1")
    try:
        proc = run_pytest(
            f"--base-image={images('good')}", "--base-image-profile=base", cwd=tmp_path, env={"DOCKER_HOST": proxy.url}
        )
    finally:
        proxy.close()
    assert proc.returncode == 4, proc.stdout + proc.stderr
    said = "ERROR: profile base is abstract: it is meant to be extended; use azureml-2020, azureml-current or "
    assert said + "azureml-custom-container" in proc.stderr
    assert proxy.connections == 0
