"""Matrix files and the xdist mode, without Docker: parsing, strict validation, layering, targets."""

from __future__ import annotations

import hashlib
import json
import re
import textwrap
import types
from pathlib import Path

import pytest
from conftest import FIXTURE_PROFILE, run_pytest

from pytest_baseimage import matrix, profiles
from pytest_baseimage.matrix import LOCAL, DistChoice, Entry, MatrixError, Settings, choose_dist

SCHEMAS = {
    "scoring": dict(matrix.FALLBACK_PART_OPTIONS["scoring"]),
    "gpu": {"gpus": matrix.VALUE, "require_gpu": matrix.BOOL},
    "deployment": {"environment": matrix.PATH, "deployment": matrix.PATH},
}


def write(tmp_path: Path, text: str, name: str = "matrix.toml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(tmp_path: Path, text: str) -> matrix.Matrix:
    return matrix.load(write(tmp_path, text), SCHEMAS)


def error(tmp_path: Path, text: str) -> str:
    with pytest.raises(MatrixError) as info:
        load(tmp_path, text)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- parsing -----------------------------------------------------------------------------------------------
def test_a_full_matrix_is_read_with_paths_relative_to_the_file(tmp_path):
    (tmp_path / "cfg" / "score").mkdir(parents=True)
    (tmp_path / "cfg" / "score" / "score.py").write_text("def init(): pass\ndef run(x): return x\n")
    (tmp_path / "cfg" / "team.toml").write_text('extends = "azureml-current"\n')
    found = load(
        tmp_path / "cfg",
        """
        [defaults]
        profile = "team.toml"
        [defaults.gpu]
        gpus = "none"

        [[images]]
        ref = "acr.io/base/cpu:1"

        [[images]]
        name = "gpu"
        ref = "acr.io/base/gpu:1"
        profile = "azureml-current"
        platform = "linux/amd64"
        docker_host = "ssh://ci@gpu-box"
        [images.gpu]
        gpus = "all"
        [images.scoring]
        score_script = "score/score.py"
    """,
    )
    cpu, gpu = found.entries
    assert found.defaults.profile == str(tmp_path / "cfg" / "team.toml")
    assert found.defaults.options == {"gpu": {"gpus": "none"}}
    assert (cpu.name, cpu.ref, cpu.settings.profile) == ("acr.io/base/cpu:1", "acr.io/base/cpu:1", None)
    assert (gpu.name, gpu.settings.profile, gpu.settings.platform) == ("gpu", "azureml-current", "linux/amd64")
    assert gpu.settings.docker_host == "ssh://ci@gpu-box"
    assert gpu.settings.options["scoring"] == {"score_script": str(tmp_path / "cfg" / "score" / "score.py")}
    assert "images[1] (gpu)" in gpu.where


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[images]]\nref = "a:1"\ngpus = "all"\n', "images[0]: unknown key 'gpus' (known: "),
        ('[defaults]\nref = "a:1"\n[[images]]\nref = "b:1"\n', "defaults: unknown key 'ref'"),
        ('image = []\n[[images]]\nref = "a:1"\n', "unknown key 'image' (known: defaults, images)"),
        (
            '[[images]]\nref = "a:1"\n[images.gpu]\ngpu = "all"\n',
            "images[0]: gpu: unknown key 'gpu' (known: gpus, require_gpu)",
        ),
        ('[[images]]\nref = "a:1"\n[images.registry]\nx = 1\n', "unknown key 'registry'"),
        ('[[images]]\nname = "x"\n', 'images[0]: needs ref = "repo:tag"'),
        ('[[images]]\nref = ""\n', 'needs ref = "repo:tag"'),
        ("[defaults]\nprofile = 'x'\n", "needs at least one [[images]] table"),
        ('images = ["a:1"]\n', "needs at least one [[images]] table"),
        ('[[images]]\nref = "a:1"\nprofile = 3\n', "images[0]: profile must be a string"),
        ('[[images]]\nref = "a:1"\nname = "a[1]"\n', "name must be a non-empty line of text without [ or ]"),
        ('[[images]]\nref = "a:1"\ndocker_host = "gpu-box:2375"\n', "docker_host 'gpu-box:2375' must start with"),
        ('[[images]]\nref = "a:1"\ndocker_host = "tcp://h:2375"\ncontext = "h"\n', "give docker_host or context"),
        ('[[images]]\nref = "a:1"\nplatform = "amd64"\n', "platform 'amd64' is not os/arch[/variant]"),
        ('[[images]]\nref = "a:1"\n[images.scoring]\nscore_script = "nope.py"\n', "nope.py does not exist"),
        ('[[images]]\nref = "a:1"\nscoring = "x"\n', "images[0]: scoring must be a table"),
        ('[[images]]\nref = "a:1"\n[images.gpu]\nrequire_gpu = "yes"\n', "gpu.require_gpu must be true or false"),
        ("[[images]\n", "is not valid TOML"),
    ],
)
def test_a_bad_matrix_is_one_line_naming_the_key(tmp_path, text, message):
    assert message in error(tmp_path, text)


def test_a_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(MatrixError, match=r"matrix file .*nope.toml: cannot read it") as info:
        matrix.load(tmp_path / "nope.toml", SCHEMAS)
    assert info.value.exit_code == 4


def test_a_part_without_matrix_options_refuses_a_table(tmp_path):
    path = write(tmp_path, '[[images]]\nref = "a:1"\n[images.registry]\nplatform = "x"\n')
    with pytest.raises(MatrixError, match="registry: this part takes no per-image options"):
        matrix.load(path, {**SCHEMAS, "registry": {}})


def test_part_schemas_prefer_what_the_part_declares():
    declared = types.SimpleNamespace(MATRIX_OPTIONS={"gpus": matrix.VALUE, "device": matrix.VALUE})
    schemas = matrix.part_schemas({"gpu": declared, "scoring": object(), "registry": object()})
    assert schemas["gpu"] == {"gpus": "value", "device": "value"}
    assert schemas["scoring"] == matrix.FALLBACK_PART_OPTIONS["scoring"]
    assert schemas["registry"] == {}


def test_a_part_parser_checks_its_values(tmp_path):
    def parse_gpus(value):
        if value not in ("all", "none"):
            raise ValueError(f"{value!r}: expected all or none")
        return value

    schemas = matrix.part_schemas({"gpu": types.SimpleNamespace(parse_gpus=parse_gpus)})
    assert schemas["gpu"] == {"gpus": parse_gpus, "require_gpu": matrix.BOOL}
    path = write(tmp_path, '[[images]]\nref = "a:1"\n[images.gpu]\ngpus = "al"\n')
    with pytest.raises(MatrixError, match=r"images\[0\]: gpu.gpus: 'al': expected all or none$"):
        matrix.load(path, schemas)


def test_the_installed_parts_are_checked_by_their_own_rules(tmp_path):
    from pytest_baseimage import plugin

    schemas = matrix.part_schemas(plugin.PARTS)
    if "gpu" not in schemas:
        pytest.skip("the gpu part is not installed")
    path = write(tmp_path, '[[images]]\nref = "a:1"\n[images.gpu]\ngpus = "device=0, 1"\n')
    assert matrix.load(path, schemas).entries[0].settings.options["gpu"] == {"gpus": "device=0,1"}


# -- layering: command line < [defaults] < entry ---------------------------------------------------------
def test_settings_layer_and_part_tables_merge_key_by_key():
    cli = Settings(profile="azureml-2020", options={"scoring": {"model_dir": "/m"}, "gpu": {"gpus": "none"}})
    defaults = Settings(profile="team", options={"scoring": {"score_script": "/s.py"}})
    entry = Settings(docker_host="tcp://h:2375", options={"gpu": {"gpus": "all"}})
    merged = entry.over(defaults).over(cli)
    assert merged.profile == "team"
    assert merged.docker_host == "tcp://h:2375"
    assert merged.options == {"scoring": {"model_dir": "/m", "score_script": "/s.py"}, "gpu": {"gpus": "all"}}


def test_base_images_join_the_matrix_with_its_defaults(tmp_path):
    path = write(tmp_path, '[defaults]\nprofile = "azureml-current"\n[[images]]\nref = "a:1"\nname = "a"\n')
    found = matrix.entries(str(path), ["b:1", "b:1"], SCHEMAS)
    assert [(e.name, e.ref, e.settings.profile) for e in found] == [
        ("a", "a:1", "azureml-current"),
        ("b:1", "b:1", "azureml-current"),
    ]


def test_the_short_form_alone_needs_no_file():
    found = matrix.entries(None, ["a:1", "b:1", "a:1"], SCHEMAS)
    assert [e.name for e in found] == ["a:1", "b:1"]
    with pytest.raises(MatrixError, match="--base-image needs an image reference"):
        matrix.entries(None, [" "], SCHEMAS)


def test_one_image_is_started_once_per_engine(tmp_path):
    twice = '[[images]]\nref = "a:1"\n[[images]]\nref = "a:1"\nname = "again"\nprofile = "azureml-current"\n'
    with pytest.raises(MatrixError, match=r"images\[1\] \(again\): image a:1 is already checked by .*images\[0\]"):
        matrix.entries(str(write(tmp_path, twice)), [], SCHEMAS)
    two_hosts = (
        '[[images]]\nref = "a:1"\nname = "cpu"\n[[images]]\nref = "a:1"\nname = "gpu"\ndocker_host = "ssh://gpu-box"\n'
    )
    found = matrix.entries(str(write(tmp_path, two_hosts)), [], SCHEMAS)
    assert [e.settings.docker_host for e in found] == [None, "ssh://gpu-box"]


def test_names_are_unique(tmp_path):
    text = '[[images]]\nref = "a:1"\nname = "x"\n[[images]]\nref = "b:1"\nname = "x"\n'
    with pytest.raises(MatrixError, match="name 'x' is already used by"):
        matrix.entries(str(write(tmp_path, text)), [], SCHEMAS)


# -- targets ----------------------------------------------------------------------------------------------
def test_targets_load_each_profile_once_and_own_their_options():
    calls: list[str] = []

    def load_profile(ref: str) -> profiles.Profile:
        calls.append(ref)
        return profiles.load(ref)

    shared = {"gpu": {"gpus": "none", "devices": [0]}}
    found = [
        Entry("a:1", "a", Settings(platform="linux/arm64")),
        Entry("b:1", "b", Settings(profile="azureml-current", docker_host="tcp://h:2375")),
        Entry("c:1", "c", Settings(docker_host=LOCAL)),
    ]
    targets = matrix.targets(found, Settings(profile="azureml-2020", options=shared), load_profile)
    assert calls == ["azureml-2020", "azureml-current"]
    assert [(t.name, t.reference, t.profile.name) for t in targets] == [
        ("a", "a:1", "azureml-2020"),
        ("b", "b:1", "azureml-current"),
        ("c", "c:1", "azureml-2020"),
    ]
    assert [t.docker_host for t in targets] == [None, "tcp://h:2375", None]
    assert targets[0].options == {"gpu": {"gpus": "none", "devices": [0]}, "platform": "linux/arm64"}
    targets[0].options["gpu"]["devices"].append(1)
    assert targets[1].options["gpu"]["devices"] == [0] and shared["gpu"]["devices"] == [0]


def test_a_bad_profile_in_the_matrix_names_the_entry():
    found = [Entry("a:1", "a", Settings(profile="nope"), where="m.toml: images[0] (a)")]
    with pytest.raises(MatrixError, match=r"^m.toml: images\[0\] \(a\): unknown profile 'nope'"):
        matrix.targets(found, Settings(profile="azureml-2020"), profiles.load)


# -- docker contexts --------------------------------------------------------------------------------------
@pytest.fixture
def docker_config(tmp_path, monkeypatch):
    """An empty docker CLI configuration of our own: contexts are read from DOCKER_CONFIG/contexts."""
    config = tmp_path / "docker-config"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    return config


def test_a_context_is_resolved_to_its_engine(tmp_path, docker_config):
    from docker.context import ContextAPI

    ContextAPI.create_context("gpu-box", host="ssh://ci@gpu-box")
    text = '[[images]]\nref = "a:1"\ncontext = "gpu-box"\n[[images]]\nref = "b:1"\ncontext = "default"\n'
    found = load(tmp_path, text)
    assert [e.settings.docker_host for e in found.entries] == ["ssh://ci@gpu-box:22", LOCAL]


def cli_context(config: Path, name: str, host: str, tls: bool = False) -> None:
    """A context laid out as `docker context create NAME --docker host=HOST[,ca=,cert=,key=]` writes it."""
    context_id = hashlib.sha256(name.encode()).hexdigest()
    meta = config / "contexts" / "meta" / context_id
    meta.mkdir(parents=True)
    endpoint = {"Host": host, "SkipTLSVerify": False}
    (meta / "meta.json").write_text(json.dumps({"Name": name, "Metadata": {}, "Endpoints": {"docker": endpoint}}))
    if tls:
        certs = config / "contexts" / "tls" / context_id / "docker"
        certs.mkdir(parents=True)
        for pem in ("ca.pem", "cert.pem", "key.pem"):
            (certs / pem).write_text("x")


def test_a_tls_context_keeps_its_name_so_the_engine_gets_its_certificates(tmp_path, docker_config):
    cli_context(docker_config, "tls-box", "tcp://h:2376", tls=True)
    cli_context(docker_config, "plain-box", "tcp://p:2375")
    text = (
        '[defaults]\ncontext = "tls-box"\n'
        '[[images]]\nref = "a:1"\n'
        '[[images]]\nref = "b:1"\ncontext = "plain-box"\n'
        '[[images]]\nref = "c:1"\ndocker_host = "tcp://q:2375"\n'
    )
    found = matrix.entries(str(write(tmp_path, text)), [], {})
    engines = [(e.settings.docker_host, e.settings.docker_context) for e in found]
    assert engines == [("https://h:2376", "tls-box"), ("http://p:2375", None), ("tcp://q:2375", None)]
    (target, *_) = matrix.targets(found, matrix.Settings(profile="azureml-current"), profiles.load)
    assert target.engine_key == ("https://h:2376", "tls-box")


@pytest.mark.parametrize(
    ("files", "skip", "url", "tls"),
    [
        ((), False, "http://h:2376", None),
        (("ca.pem",), False, "https://h:2376", {"verify": True, "cert": None}),
        ((), True, "https://h:2376", {"verify": False, "cert": None}),
        (("ca.pem", "cert.pem", "key.pem"), False, "https://h:2376", {"verify": True, "cert": ("cert.pem", "key.pem")}),
    ],
    ids=["plain", "ca-only", "skip-verify", "client-certificates"],
)
def test_every_tls_layout_the_cli_writes_is_read(docker_config, files, skip, url, tls):
    from pytest_baseimage.engine import read_context

    cli_context(docker_config, "box", "tcp://h:2376", tls=False)
    if skip:
        meta = docker_config / "contexts" / "meta" / hashlib.sha256(b"box").hexdigest() / "meta.json"
        data = json.loads(meta.read_text())
        data["Endpoints"]["docker"]["SkipTLSVerify"] = True
        meta.write_text(json.dumps(data))
    certs = docker_config / "contexts" / "tls" / hashlib.sha256(b"box").hexdigest() / "docker"
    for name in files:
        certs.mkdir(parents=True, exist_ok=True)
        (certs / name).write_text("x")
    context = read_context("box")
    assert context.host == url
    if tls is None:
        assert context.tls is None
    else:
        cert = tuple(Path(p).name for p in context.tls.cert) if context.tls.cert else None
        assert {"verify": context.tls.verify, "cert": cert} == tls


def test_a_context_whose_certificates_are_broken_is_one_line(tmp_path, docker_config):
    for name in ("gone-box", "half-box"):
        cli_context(docker_config, name, "tcp://h:2376", tls=True)
    gone = docker_config / "contexts" / "tls" / hashlib.sha256(b"gone-box").hexdigest() / "docker" / "key.pem"
    gone.unlink()
    gone.symlink_to(tmp_path / "nowhere.pem")  # dangling: listed, but not a file
    (docker_config / "contexts" / "tls" / hashlib.sha256(b"half-box").hexdigest() / "docker" / "key.pem").unlink()
    assert "cannot use Docker context 'gone-box'" in error(tmp_path, '[[images]]\nref = "a:1"\ncontext = "gone-box"\n')
    assert "client certificate without its key" in error(tmp_path, '[[images]]\nref = "a:1"\ncontext = "half-box"\n')


def test_a_context_made_by_the_cli_is_found_without_a_config_json(tmp_path, docker_config):
    """`docker context create` writes only contexts/meta/<id>/meta.json; the SDK alone would not look there."""
    (docker_config / "config.json").unlink()
    cli_context(docker_config, "cli-box", "ssh://ci@cli-box")
    meta = docker_config / "contexts" / "meta" / hashlib.sha256(b"cli-box").hexdigest()
    found = load(tmp_path, '[[images]]\nref = "a:1"\ncontext = "cli-box"\n')
    assert [e.settings.docker_host for e in found.entries] == ["ssh://ci@cli-box:22"]
    (meta / "meta.json").write_text("{not json")
    assert "cannot read Docker context 'cli-box'" in error(tmp_path, '[[images]]\nref = "a:1"\ncontext = "cli-box"\n')


def test_an_unknown_context_is_one_line(tmp_path, docker_config):
    assert "no docker context 'nope' (see `docker context ls`)" in error(
        tmp_path, '[[images]]\nref = "a:1"\ncontext = "nope"\n'
    )


def test_an_entry_can_return_to_the_local_engine(tmp_path, docker_config):
    text = (
        '[defaults]\ndocker_host = "tcp://h:2375"\n'
        '[[images]]\nref = "a:1"\ncontext = "default"\n[[images]]\nref = "b:1"\n'
    )
    found = matrix.entries(str(write(tmp_path, text)), [], SCHEMAS)
    targets = matrix.targets(found, Settings(profile="azureml-2020"), profiles.load)
    assert [t.docker_host for t in targets] == [None, "tcp://h:2375"]


# -- xdist distribution mode ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dist", "distload", "numprocesses", "has_images", "expected"),
    [
        ("no", False, 2, True, DistChoice(dist="loadgroup")),  # -n 2: xdist would pick load
        ("no", False, "auto", True, DistChoice(dist="loadgroup")),
        ("loadgroup", False, 2, True, DistChoice()),  # the user's own choice, and ours
        ("no", False, None, True, DistChoice()),  # no -n: nothing is distributed
        ("no", False, 0, True, DistChoice()),  # -n 0
        ("no", False, 2, False, DistChoice()),  # a plain test run: not ours to change
        ("load", False, 2, False, DistChoice()),
    ],
)
def test_dist_mode_is_chosen_only_when_nobody_chose(dist, distload, numprocesses, has_images, expected):
    assert choose_dist(dist=dist, distload=distload, numprocesses=numprocesses, has_images=has_images) == expected


@pytest.mark.parametrize(
    ("dist", "distload", "shown"),
    [("load", False, "load"), ("no", True, "load"), ("worksteal", False, "worksteal"), ("each", False, "each")],
)
def test_another_dist_mode_is_kept_with_a_warning(dist, distload, shown):
    choice = choose_dist(dist=dist, distload=distload, numprocesses=2, has_images=True)
    assert choice.dist is None
    assert f"--dist={shown} may split one image's stages" in choice.warning
    assert "--dist=loadgroup" in choice.warning


# -- through pytest (no engine needed: the matrix is refused before anything starts) ------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[images]]\nref = "a:1"\ngpus = "all"\n', "images[0]: unknown key 'gpus'"),
        ('[[images]]\nref = "a:1"\nprofile = "nope"\n', "images[0] (a:1): unknown profile 'nope'"),
        ('[[images]]\nref = "a:1"\nprofile = "missing.toml"\n', "missing.toml does not exist"),
    ],
)
def test_pytest_refuses_a_bad_matrix_with_exit_4(tmp_path, text, message):
    path = write(tmp_path, text)
    proc = run_pytest(f"--base-image-matrix={path}", "-q", cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 4, output
    assert message in output
    assert "Traceback" not in output
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1


def test_the_example_matrix_is_valid(monkeypatch):
    example = Path(__file__).resolve().parents[1] / "examples" / "matrix.toml"
    monkeypatch.setattr(matrix, "resolve_context", lambda name, where: (f"ssh://{name}", None))
    targets = matrix.targets(matrix.entries(str(example), [], SCHEMAS), Settings(profile="azureml-2020"), profiles.load)
    assert len(targets) >= 3
    assert {t.profile.name for t in targets} >= {"azureml-current", "onnxruntime-cuda"}
    assert any(t.docker_host for t in targets) and any(t.options.get("scoring") for t in targets)
    [custom] = [t for t in targets if t.options.get("deployment")]
    assert custom.profile.name == "azureml-custom-container"
    assert custom.options["deployment"]["environment"] == str(example.parent / "azureml/custom/environment.yml")


def test_the_fixture_profile_path_is_absolute_in_a_matrix(tmp_path):
    found = load(tmp_path, f'[defaults]\nprofile = "{FIXTURE_PROFILE}"\n[[images]]\nref = "a:1"\n')
    assert found.defaults.profile == str(FIXTURE_PROFILE)


@pytest.mark.parametrize("name", ["github-actions.yml", "azure-pipelines.yml"])
def test_the_ci_examples_parse_and_use_real_options(name):
    yaml = pytest.importorskip("yaml")
    path = Path(__file__).resolve().parents[1] / "examples" / "ci" / name
    text = path.read_text(encoding="utf-8")
    assert yaml.safe_load(text)
    help_text = run_pytest("--help", cwd=path.parent).stdout
    not_ours = {"--html", "--junit", "--json", "--password-stdin", "--junitxml"}  # merge's, docker's, pytest's
    used = set(re.findall(r"(?<![\w-])(--[a-z][a-z-]+)(?==|\s)", text)) - not_ours
    assert used and all(option in help_text for option in used), sorted(o for o in used if o not in help_text)
    assert "baseimage-report merge" in text
