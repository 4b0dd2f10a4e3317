"""Unit tests of the registry part: options, references, pull decisions, error texts, progress, secrets."""

from __future__ import annotations

import base64
import copy
import re
from dataclasses import dataclass, field
from typing import Any

import docker
import pytest

from pytest_baseimage import registry
from pytest_baseimage.errors import ExitCode, ImageNotFound
from pytest_baseimage.registry import (
    BuildLog,
    Credentials,
    PullError,
    PullProgress,
    RegistryOptions,
    RegistryUsageError,
    Secret,
    describe_pull_error,
    parse_options,
)
from pytest_baseimage.results import ImageInfo

PASSWORD = "Unit-Pw-5b1e-NeverPrint"
DIGEST = "sha256:" + "ab" * 32


def options(**values: Any) -> RegistryOptions:
    return parse_options(values, environ={"REG_PW": PASSWORD}, read_stdin=lambda: PASSWORD + "\n")


# -- options ---------------------------------------------------------------------------------------------
def test_password_sources_env_and_stdin():
    by_env = options(registry="r.example", username="u", password_env="REG_PW")
    by_stdin = options(registry="r.example", username="u", password_stdin=True)
    for parsed, source in ((by_env, "$REG_PW"), (by_stdin, "stdin")):
        assert parsed.credentials == Credentials("r.example", "u", parsed.password, source)
        assert parsed.password.reveal() == PASSWORD  # the trailing newline of `echo pw |` is not part of it


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"password": PASSWORD}, "--registry-password is refused"),
        ({"username": "u", "password_env": "REG_PW"}, "need --registry=ADDRESS"),
        ({"registry": "r", "password_env": "REG_PW"}, "without --registry-username"),
        ({"registry": "r", "username": "u"}, "needs a password"),
        ({"registry": "r", "username": "u", "password_env": "REG_PW", "password_stdin": True}, "give the registry"),
        ({"registry": "r", "username": "u", "password_env": "UNSET_VAR"}, "UNSET_VAR is not set or empty"),
        ({"registry": "r", "username": "u", "password_env": "p@ss w0rd!"}, "is not a variable name"),
        ({"build_args": ["A=1"]}, "--build-arg needs --base-image-dockerfile"),
        ({"dockerfile": "/nonexistent/Dockerfile"}, "no such file"),
    ],
)
def test_refusals_are_usage_errors(values, message):
    with pytest.raises(RegistryUsageError, match=message) as caught:
        options(**values)
    assert caught.value.exit_code == ExitCode.USAGE_ERROR
    assert PASSWORD not in str(caught.value) and "p@ss w0rd!" not in str(caught.value)


def test_empty_stdin_is_refused():
    with pytest.raises(RegistryUsageError, match="standard input was empty"):
        parse_options({"registry": "r", "username": "u", "password_stdin": True}, read_stdin=lambda: "\n")


def test_build_args(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM scratch\n")
    parsed = options(dockerfile=str(dockerfile), build_args=["A=1", "B=x=y", "C="])
    assert parsed.build_args == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(RegistryUsageError, match="KEY=VALUE, not 'A'"):
        options(dockerfile=str(dockerfile), build_args=["A"])


def test_xdist_worker_neither_reads_stdin_nor_pulls_again():
    def no_stdin() -> str:
        raise AssertionError("a worker must not read stdin")

    parsed = parse_options(
        {"registry": "r", "username": "u", "password_stdin": True, "pull": "always"}, read_stdin=no_stdin, worker=True
    )
    assert parsed.password is None and parsed.pull == "missing"


@pytest.mark.parametrize(
    ("image", "ok"),
    [
        ("ubuntu", True),
        ("ubuntu:22.04", True),
        ("mcr.microsoft.com/azureml/base:latest", True),
        ("127.0.0.1:5000/team/good@" + DIGEST, True),
        ("localhost/x:1", True),
        ("sha256:" + "0" * 64, True),
        ("Upper/Case", False),
        ("UPPER/case:tag", False),  # no dot, port or localhost: a repository, which Docker wants in lower case
        ("MyRegistry.example/team/x:1", True),  # a host may have capitals
        ("localhost:5000/x:Tag", True),  # and so may a tag
        ("x::1", False),
        ("x@sha256:short", False),
        ("-x", False),
    ],
)
def test_reference_syntax(image, ok):
    if ok:
        parse_options({}, images=[image])
    else:
        with pytest.raises(RegistryUsageError, match="is not an image reference"):
            parse_options({}, images=[image])


def test_require_digest():
    parse_options({"require_digest": True}, images=["r.example/x@" + DIGEST, "sha256:" + "0" * 64])
    refusal = re.escape("'r.example/x:1' is a moving tag; pin it as r.example/x@sha256")
    with pytest.raises(RegistryUsageError, match=refusal):
        parse_options({"require_digest": True}, images=["r.example/x:1"])


def test_validate_targets_covers_matrix_entries():
    @dataclass
    class T:
        reference: str
        options: dict = field(default_factory=dict)

    pinned = {"registry": RegistryOptions(require_digest=True).to_dict()}
    registry.validate_targets([T("x@" + DIGEST, pinned), T("y:1")])
    with pytest.raises(RegistryUsageError, match="moving tag"):
        registry.validate_targets([T("y:1", pinned)])


# -- secrets -----------------------------------------------------------------------------------------------
def test_secret_never_prints_itself():
    parsed = options(registry="r.example", username="u", password_env="REG_PW")
    for text in (repr(parsed), str(parsed.to_dict()), repr(copy.deepcopy(parsed.to_dict())), f"{parsed.password}"):
        assert PASSWORD not in text
    assert RegistryOptions.from_dict(copy.deepcopy(parsed.to_dict())).password.reveal() == PASSWORD


def test_secrets_include_the_basic_auth_token():
    parsed = options(registry="r.example", username="u", password_env="REG_PW")
    assert parsed.secrets() == [PASSWORD, base64.b64encode(f"u:{PASSWORD}".encode()).decode()]
    assert registry.scrub(f"\x1b[31mauth {PASSWORD} failed", parsed.secrets()) == "auth *** failed"


def test_credentials_go_only_to_their_registry():
    parsed = options(registry="https://R.example/", username="u", password_env="REG_PW")
    assert parsed.registry == "r.example"
    assert parsed.credentials_for("r.example/team/x:1") is not None
    assert parsed.credentials_for("other.example/team/x:1") is None
    assert parsed.credentials_for("ubuntu:22.04") is None


# -- references ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("team/x:1", "r.example/team/x:1"),
        ("x", "r.example/x"),
        ("other.example/x:1", "other.example/x:1"),
        ("localhost:5000/x", "localhost:5000/x"),
        ("sha256:" + "0" * 64, "sha256:" + "0" * 64),
    ],
)
def test_qualify_like_azure_ml(reference, expected):
    assert registry.qualify(reference, "r.example") == expected
    assert registry.qualify(reference, "") == reference


@pytest.mark.parametrize(
    ("reference", "split", "host"),
    [
        ("ubuntu", ("ubuntu", "latest"), "docker.io"),
        ("ubuntu:22.04", ("ubuntu", "22.04"), "docker.io"),
        ("127.0.0.1:5000/a/b", ("127.0.0.1:5000/a/b", "latest"), "127.0.0.1:5000"),
        ("127.0.0.1:5000/a/b:v1", ("127.0.0.1:5000/a/b", "v1"), "127.0.0.1:5000"),
        ("r.example/a@" + DIGEST, ("r.example/a", DIGEST), "r.example"),
        ("index.docker.io/library/ubuntu:1", ("index.docker.io/library/ubuntu", "1"), "docker.io"),
    ],
)
def test_split_and_registry_of(reference, split, host):
    assert registry.split_reference(reference) == split
    assert registry.registry_of(reference) == host


def test_is_pinned():
    assert registry.is_pinned("x@" + DIGEST) and registry.is_pinned("sha256:" + "0" * 64)
    assert not registry.is_pinned("x:1") and not registry.is_pinned("x") and not registry.is_pinned("0123456789ab")


# -- pull error texts (the daemon's own words, as seen from Docker 20.10 and distribution 2.8) ------------------
CREDS = Credentials("127.0.0.1:5000", "gate", Secret(PASSWORD), "$REG_PW")


@pytest.mark.parametrize(
    ("daemon", "creds", "expected"),
    [
        (
            "unauthorized: authentication required",
            CREDS,
            "registry 127.0.0.1:5000 refused user 'gate' with the password from $REG_PW",
        ),
        (
            'Head "http://127.0.0.1:5000/v2/t/x/manifests/v1": no basic auth credentials',
            None,
            "registry 127.0.0.1:5000 wants credentials",
        ),
        (
            "manifest for 127.0.0.1:5000/t/x:v1 not found: manifest unknown: manifest unknown",
            CREDS,
            "registry 127.0.0.1:5000 has no tag 'v1' in repository 't/x' (or no such repository)",
        ),
        (
            'Get "http://127.0.0.1:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused',
            CREDS,
            "cannot reach registry 127.0.0.1:5000 (Get",
        ),
        ("something new", None, "the registry 127.0.0.1:5000 answered: something new"),
    ],
)
def test_pull_errors_are_one_line(daemon, creds, expected):
    error = describe_pull_error("127.0.0.1:5000/t/x:v1", daemon, creds)
    assert isinstance(error, PullError) and error.exit_code == ExitCode.UNCHECKED
    assert expected in str(error) and "\n" not in str(error)


def test_docker_hub_pull_access_denied():
    text = (
        "pull access denied for nope/x, repository does not exist or may require 'docker login': "
        "denied: requested access to the resource is denied"
    )
    assert "has no repository 'nope/x', or it needs credentials" in str(describe_pull_error("nope/x:1", text, None))


def test_unknown_digest_says_digest():
    error = describe_pull_error("r.example/t/x@" + DIGEST, "manifest unknown", None)
    assert f"has no digest '{DIGEST}'" in str(error) and "check the repository name and the digest" in str(error)


# -- progress ------------------------------------------------------------------------------------------------
def test_progress_is_rate_limited_and_compact():
    now = [0.0]
    lines: list[str] = []
    progress = PullProgress("r/x:1", lines.append, interval_s=2.0, clock=lambda: now[0])
    progress.start("not on the Docker engine")
    events = [
        {"status": "Pulling from x", "id": "1"},
        {"status": "Pulling fs layer", "id": "a"},
        {"status": "Pulling fs layer", "id": "b"},
        *(
            {"status": "Downloading", "id": "a", "progressDetail": {"current": c, "total": 40_000_000}}
            for c in range(1_000_000, 40_000_001, 1_000_000)
        ),
        {"status": "Pull complete", "id": "a"},
        {"status": "Already exists", "id": "b"},
        {"status": "Digest: " + DIGEST},
    ]
    for event in events:
        now[0] += 0.25
        progress.update(event)
    now[0] += 1.0
    progress.finish()
    assert lines[0] == "pytest-baseimage: pulling r/x:1 (not on the Docker engine)"
    assert lines[-1] == f"pytest-baseimage: pulled r/x:1 ({DIGEST}) in {now[0]:.1f} s"
    middle = lines[1:-1]
    assert 4 <= len(middle) <= 6  # ~11 s of events at one line per 2 s, not one per event
    assert middle[0].startswith("pytest-baseimage: pulling r/x:1: 0/2 layers, ") and " of 40.0 MB" in middle[0]
    assert progress.digest == DIGEST


# -- resolve: what is pulled when ------------------------------------------------------------------------------
class FakeAPI:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine

    def pull(self, repo: str, tag: str, stream: bool, decode: bool, auth_config: dict | None = None):
        self.engine.pulls.append((repo, tag, auth_config))
        if self.engine.pull_error:
            yield {"error": self.engine.pull_error}
            return
        self.engine.local[f"{repo}@{tag}" if tag.startswith("sha256:") else f"{repo}:{tag}"] = "sha256:" + "1" * 64
        yield {"status": "Digest: " + DIGEST}

    def inspect_distribution(self, reference: str, auth_config: dict | None = None) -> dict:
        self.engine.asked.append((reference, auth_config))
        if self.engine.distribution_error:
            raise docker.errors.APIError(self.engine.distribution_error)
        return {"Descriptor": {"digest": self.engine.remote}}

    def inspect_image(self, reference: str) -> dict:
        return {"RepoDigests": self.engine.repo_digests.get(reference, [])}


class FakeEngine:
    host = "unix:///fake.sock"
    remote = DIGEST  # what the registry's tags name now
    distribution_error = ""

    def __init__(self, local: dict[str, str] | None = None, pull_error: str = "") -> None:
        self.local = dict(local or {})
        self.pulls: list[tuple[str, str, dict | None]] = []
        self.pull_error = pull_error
        self.asked: list[tuple[str, dict | None]] = []
        self.repo_digests: dict[str, list[str]] = {}
        self.client = type(
            "Client", (), {"api": FakeAPI(self), "version": lambda _: {"Os": "linux", "Arch": "amd64"}}
        )()

    def image_info(self, reference: str) -> ImageInfo:
        for ref, image_id in self.local.items():
            if reference in (ref, image_id) or image_id.startswith("sha256:" + reference):
                return ImageInfo(reference=reference, image_id=image_id)
        raise ImageNotFound(f"image '{reference}' is not on the Docker engine at {self.host}")


@dataclass
class Target:
    reference: str
    options: dict = field(default_factory=dict)


def resolve(engine: FakeEngine, reference: str, **values: Any) -> ImageInfo:
    opts = options(**values).to_dict()
    return registry.resolve(engine, Target(reference, {"registry": opts}), write=lambda line: None)


def test_missing_pulls_only_what_is_not_local():
    engine = FakeEngine({"x:1": "sha256:" + "2" * 64})
    assert resolve(engine, "x:1").image_id == "sha256:" + "2" * 64 and engine.pulls == []
    info = resolve(engine, "y:1")
    assert engine.pulls == [("y", "1", None)] and info.digest == "y@" + DIGEST


def test_always_refreshes_a_tag_but_never_a_digest_or_an_id():
    engine = FakeEngine({"x:1": "sha256:" + "2" * 64, "x@" + DIGEST: "sha256:" + "3" * 64, "z:1": "sha256:" + "4" * 64})
    resolve(engine, "x:1", pull="always")
    resolve(engine, "x@" + DIGEST, pull="always")
    resolve(engine, "4" * 12, pull="always")
    resolve(engine, "sha256:" + "4" * 64, pull="always")
    assert [pull[:2] for pull in engine.pulls] == [("x", "1")]


def test_never_does_not_pull():
    with pytest.raises(ImageNotFound, match="--pull=never forbids pulling it"):
        resolve(FakeEngine(), "x:1", pull="never")


def test_credentials_are_sent_to_their_registry_only():
    engine = FakeEngine()
    resolve(engine, "team/x:1", registry="r.example", username="u", password_env="REG_PW")
    resolve(engine, "other.example/x:1", registry="r.example", username="u", password_env="REG_PW")
    assert engine.pulls[0] == (
        "r.example/team/x",
        "1",
        {"username": "u", "password": PASSWORD, "serveraddress": "r.example"},
    )
    assert engine.pulls[1] == ("other.example/x", "1", None)


def test_a_failed_pull_is_one_scrubbed_line():
    engine = FakeEngine(pull_error=f"unauthorized: bad password {PASSWORD}")
    with pytest.raises(PullError) as caught:
        resolve(engine, "team/x:1", registry="r.example", username="u", password_env="REG_PW")
    text = str(caught.value)
    assert text.startswith(
        "image 'r.example/team/x:1' is not on the Docker engine at unix:///fake.sock, and "
        "pulling it failed: registry r.example refused user 'u'"
    )
    assert PASSWORD not in text and "***" in text


def test_a_missing_image_id_is_not_pulled():
    with pytest.raises(ImageNotFound, match="an image id cannot be pulled"):
        resolve(FakeEngine(), "sha256:" + "9" * 64)


# -- build log -----------------------------------------------------------------------------------------------
def test_build_log_streams_steps_and_keeps_the_tail(tmp_path):
    shown: list[str] = []
    log = BuildLog(shown.append)
    log.add("Step 1/2 : FROM x\n ---> abc\n")
    for n in range(40):
        log.add(f"line {n}\n")
    log.add("\x1b[31mStep 2/2 : RUN false\x1b[0m\n")
    assert shown == ["pytest-baseimage: build: Step 1/2 : FROM x", "pytest-baseimage: build: Step 2/2 : RUN false"]
    message = log.failure(tmp_path / "Dockerfile", "The command '/bin/sh -c false' returned a non-zero code: 1\nmore")
    lines = message.splitlines()
    assert (
        lines[0] == f"building {tmp_path / 'Dockerfile'} failed: The command '/bin/sh -c false' returned a "
        "non-zero code: 1"
    )
    assert lines[1] == f"  last {registry.BUILD_TAIL_LINES} lines of the build log:"
    assert lines[-1] == "  | Step 2/2 : RUN false" and len(lines) == 2 + registry.BUILD_TAIL_LINES


def test_build_log_finds_the_image_id_of_an_old_engine():
    log = BuildLog(lambda line: None)
    log.add("Successfully built 0123456789ab\n")
    assert log.built_id() == "0123456789ab"


# -- a tag that names a registry is checked against it before a local copy is used ---------------------------
def test_a_local_tag_the_registry_has_moved_is_pulled_again():
    engine = FakeEngine({"r.example/x:1": "sha256:" + "2" * 64})
    engine.repo_digests["r.example/x:1"] = ["r.example/x@sha256:" + "0" * 64]  # an older push
    info = resolve(engine, "r.example/x:1")
    assert [ref for ref, _ in engine.asked] == ["r.example/x:1"]
    assert engine.pulls == [("r.example/x", "1", None)] and info.digest == "r.example/x@" + DIGEST


def test_a_local_tag_the_registry_still_names_is_used_with_that_digest():
    engine = FakeEngine({"r.example/x:1": "sha256:" + "2" * 64})
    engine.repo_digests["r.example/x:1"] = ["r.example/x@" + DIGEST]
    info = resolve(engine, "r.example/x:1")
    assert engine.pulls == [] and info.digest == "r.example/x@" + DIGEST


def test_a_registry_that_cannot_be_asked_is_unchecked_and_never_is_offline():
    engine = FakeEngine({"r.example/x:1": "sha256:" + "2" * 64})
    engine.distribution_error = "unauthorized: authentication required"
    with pytest.raises(PullError, match="cannot ask the registry") as caught:
        resolve(engine, "r.example/x:1")
    assert caught.value.exit_code == 2
    assert resolve(engine, "r.example/x:1", pull="never").image_id == "sha256:" + "2" * 64
    assert engine.pulls == []


def test_a_tag_without_a_registry_host_is_not_asked_about():
    engine = FakeEngine({"x:1": "sha256:" + "2" * 64})
    resolve(engine, "x:1")
    assert engine.asked == [] and engine.pulls == []


@pytest.mark.parametrize(
    ("reference", "digests", "expected"),
    [
        ("team/good:latest", ["127.0.0.1:5000/attest/good@" + DIGEST], ""),  # another repository's: not ours
        ("ubuntu:22.04", ["docker.io/library/ubuntu@" + DIGEST], "docker.io/library/ubuntu@" + DIGEST),
        ("docker.io/library/ubuntu", ["ubuntu@" + DIGEST], "ubuntu@" + DIGEST),
        (
            "127.0.0.1:5000/a/b:v1",
            ["other/b@" + DIGEST, "127.0.0.1:5000/a/b@" + DIGEST],
            "127.0.0.1:5000/a/b@" + DIGEST,
        ),
        ("sha256:" + "0" * 64, ["ubuntu@" + DIGEST], ""),  # an image id names no repository
    ],
)
def test_the_digest_recorded_is_the_one_of_the_repository_the_image_was_given_by(reference, digests, expected):
    from pytest_baseimage.engine_client import matching_digest

    assert matching_digest(reference, digests) == expected
