"""Build-then-test: a Dockerfile built with the SDK, its log streamed and its tail kept."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..engine import Engine
from ..text import strip_ansi
from .base import BUILD_TAIL_LINES, PREFIX, BuildFailed, PullError, Writer, explanation, first_line
from .options import Credentials


def login(engine: Engine, credentials: Credentials) -> None:
    """Let the build's FROM pull from the private registry (the SDK keeps the login in memory only)."""
    import docker

    try:
        engine.client.login(
            username=credentials.username,
            password=credentials.password.reveal(),
            registry=credentials.registry,
            reauth=True,
        )
    except docker.errors.APIError as exc:
        raise PullError(
            f"cannot log in to registry {credentials.registry} as '{credentials.username}' with the "
            f"password from {credentials.source}: {first_line(explanation(exc))}"
        ) from None


def build(engine: Engine, dockerfile: Path, build_args: Mapping[str, str], write: Writer) -> str:
    """Build with the SDK, streaming the steps; BuildFailed with the log's tail when it does not build."""
    import docker

    dockerfile = dockerfile.resolve()
    log = BuildLog(write)
    write(f"{PREFIX}: building {dockerfile}" + (f" with {', '.join(sorted(build_args))}" if build_args else ""))
    image_id, error = "", ""
    try:
        for event in engine.client.api.build(
            path=str(dockerfile.parent),
            dockerfile=dockerfile.name,
            buildargs=dict(build_args),
            rm=True,
            forcerm=True,
            decode=True,
        ):
            if event.get("error"):
                error = str(event["error"])
                break
            log.add(str(event.get("stream") or ""))
            image_id = str((event.get("aux") or {}).get("ID") or image_id)
    except docker.errors.APIError as exc:
        error = explanation(exc)
    except docker.errors.DockerException as exc:
        error = str(exc)
    image_id = image_id or log.built_id()
    if error or not image_id:
        raise BuildFailed(log.failure(dockerfile, error or "the build reported no image"))
    write(f"{PREFIX}: built {dockerfile} -> {image_id}")
    return image_id


@dataclass
class BuildLog:
    """The build's output: step lines go to the terminal as they come, everything is kept for the tail."""

    write: Writer
    lines: list[str] = field(default_factory=list)

    def add(self, chunk: str) -> None:
        for line in strip_ansi(chunk).splitlines():
            if not line.strip():
                continue
            self.lines.append(line.rstrip())
            if line.startswith("Step "):
                self.write(f"{PREFIX}: build: {line.rstrip()}")

    def built_id(self) -> str:
        for line in reversed(self.lines):
            if line.startswith("Successfully built "):
                return line.split()[-1]
        return ""

    def failure(self, dockerfile: Path, error: str) -> str:
        tail = self.lines[-BUILD_TAIL_LINES:]
        head = f"building {dockerfile} failed: {first_line(error)}"
        if not tail:
            return head
        return "\n".join([head, f"  last {len(tail)} lines of the build log:", *(f"  | {line}" for line in tail)])
