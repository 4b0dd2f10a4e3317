"""The deployment stage's live half: start the image the way a managed online endpoint starts a custom
container, and ask its three routes.

The image's own ENTRYPOINT and CMD run (Azure ML runs them when the environment has an inference_config;
without one, Azure ML's stack images start their server from their CMD too), as the image's USER, with
Azure ML's variables: AZUREML_MODEL_DIR, AML_APP_ROOT, AZUREML_ENTRY_SCRIPT (when a scoring script is given).
The model and the code are copied where Azure ML mounts them, through the archive API (never a host
mount). Everything else, bounded container, internal network, the host-side client, the log, is the
scoring stage's machinery (`scoring.run_server`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..engine import Engine
from ..errors import ProfileError
from ..profiles import Profile
from ..scoring import MAX_MODEL_BYTES, ScoringSpec, run_server
from ..scoring_spec import read_model
from . import definitions, judge
from .judge import STAGE, DeploymentObservation, ImageConfig

APP_ROOT = "/var/azureml-app"  # where Azure ML mounts the code (AML_APP_ROOT's parent)
DEFAULT_PAYLOAD = b'{"data": [[1.0, 2.0, 3.0]]}'
REQUEST_TIMEOUT_S = 30.0


def observe_deployment(check: Any) -> DeploymentObservation | None:
    """Run the image as a deployment (an `ImageCheck`); None when no definitions were given."""
    options = check.target.options.get(STAGE) or {}
    if not options.get("environment") and not options.get("deployment"):
        return None
    defs = definitions.load(options.get("environment", ""), options.get("deployment", ""))
    image = check.info.image_id or check.target.reference
    config = image_config(check.engine, image)
    payload_file = (check.target.options.get("scoring") or {}).get("payload_file") or defs.sample_request
    obs = DeploymentObservation(defs, check.target.reference, config, payload_source=payload_file or "built-in")
    spec = build_spec(defs, check.profile, payload_file)
    obs.model_dir, obs.app_root = spec.model_path, spec.env.get("AML_APP_ROOT", "")
    if not config.entrypoint and not config.cmd:
        return obs
    # None: the engine then uses the image's own entrypoint, command and working directory (stdin closed, as
    # on an endpoint: a CMD that reads stdin, like `bash`, ends at once).
    own = {"entrypoint": None, "command": None, "working_dir": None, "stdin_open": False}
    obs.run = run_server(check.engine, image, spec, role=STAGE, container=own)
    return obs


def image_config(engine: Engine, image: str) -> ImageConfig:
    """The image config's entrypoint, command, exposed ports, environment and user."""
    config = engine.client.api.inspect_image(image).get("Config") or {}
    env = {}
    for item in config.get("Env") or []:
        key, _, value = str(item).partition("=")
        env[key] = value
    ports = []
    for key in config.get("ExposedPorts") or {}:
        number, _, proto = str(key).partition("/")
        if number.isdigit() and proto in ("", "tcp"):
            ports.append(int(number))
    return ImageConfig(
        entrypoint=tuple(str(p) for p in config.get("Entrypoint") or ()),
        cmd=tuple(str(p) for p in config.get("Cmd") or ()),
        exposed_ports=tuple(sorted(ports)),
        env=env,
        user=str(config.get("User") or ""),
        working_dir=str(config.get("WorkingDir") or ""),
    )


def build_spec(defs: definitions.Definitions, profile: Profile, payload_file: str = "") -> ScoringSpec:
    """The scoring machinery's spec for this deployment: routes, Azure ML's variables, files, deadlines."""
    section = profile.section(STAGE) or {}
    routes = judge.routes_of(defs)
    files: dict[str, bytes] = {}
    env: dict[str, str] = {}
    model_dir = f"{APP_ROOT}/azureml-models/{defs.model_name or 'model'}/{defs.model_version or '1'}"
    if defs.model_path:
        env["AZUREML_MODEL_DIR"] = model_dir
        files.update(_model_files(Path(defs.model_path), model_dir))
    app_root = APP_ROOT
    if defs.code_dir:
        app_root = f"{APP_ROOT}/{Path(defs.code_dir).name}"
        files.update({f"{app_root.lstrip('/')}/{name}": data for name, data in read_model(defs.code_dir).items()})
        env["AZUREML_ENTRY_SCRIPT"] = defs.scoring_script
    env["AML_APP_ROOT"] = app_root
    env.update(defs.env_vars)
    payload = Path(payload_file).read_bytes() if payload_file else DEFAULT_PAYLOAD
    return ScoringSpec(
        server="the image's own entrypoint",
        command=(),
        port=routes["scoring"].port,
        env=env,
        workdir="",
        entry_script=f"{app_root}/{defs.scoring_script}" if defs.scoring_script else "",
        model_path=model_dir if defs.model_path else "",
        script_source=defs.deployment_file or defs.environment_file,
        files=files,
        payload=payload,
        content_type="application/json",
        liveness_path=routes["liveness"].path,
        score_path=routes["scoring"].path,
        boot_timeout_s=float(section.get("boot_timeout_s", 60)),
        request_timeout_s=float(section.get("request_timeout_s", REQUEST_TIMEOUT_S)),
        liveness_port=routes["liveness"].port,
        readiness_path=routes["readiness"].path,
        readiness_port=routes["readiness"].port,
        final_statuses=(404,),
        list_ports=True,
    )


def _model_files(path: Path, model_dir: str) -> dict[str, bytes]:
    """The model under AZUREML_MODEL_DIR/<its name>, as Azure ML lays out a model registered from a path."""
    root = f"{model_dir.strip('/')}/{path.name}"
    if path.is_file():
        if path.stat().st_size > MAX_MODEL_BYTES:
            raise ProfileError(f"model {path} is larger than {MAX_MODEL_BYTES >> 20} MiB")
        return {root: path.read_bytes()}
    return {f"{root}/{name}": data for name, data in read_model(str(path)).items()}
