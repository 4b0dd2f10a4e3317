"""The gpu stage's options: --gpus and --require-gpu, per image (Target.options["gpu"])."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any


# -- options -------------------------------------------------------------------------------------------
def parse_gpus(value: str | int) -> str:
    """`--gpus` as Docker spells it: all, none, a count, or device=0,1. Normalised; argparse reports errors."""
    text = str(value).strip().strip("'\"").lower()
    if text in ("all", "none"):
        return text
    if text.isdigit() and int(text) > 0:
        return str(int(text))
    if text.startswith("device=") and all(part.strip() for part in text[7:].split(",")):
        return "device=" + ",".join(part.strip() for part in text[7:].split(","))
    raise argparse.ArgumentTypeError(f"{value!r}: expected all, none, a number of GPUs, or device=0,1")


@dataclass(frozen=True)
class GpuOptions:
    """What the user asked for: which GPUs the candidate gets, and whether layer 3 is a gate."""

    gpus: str = "all"
    require: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> GpuOptions:
        data = data or {}
        return cls(gpus=str(data.get("gpus") or "all"), require=bool(data.get("require_gpu")))

    def to_dict(self) -> dict[str, Any]:
        return {"gpus": self.gpus, "require_gpu": self.require}

    def device_request(self) -> Any:
        """The SDK's equivalent of `docker run --gpus ...`."""
        import docker

        if self.gpus.startswith("device="):
            ids = self.gpus[len("device=") :].split(",")
            return docker.types.DeviceRequest(device_ids=ids, capabilities=[["gpu"]])
        count = -1 if self.gpus == "all" else int(self.gpus)
        return docker.types.DeviceRequest(count=count, capabilities=[["gpu"]])


# The keys of a matrix file's [images.gpu] table, and how the matrix checks each (see matrix.part_schemas).
MATRIX_OPTIONS: dict[str, str] = {"gpus": "parse_gpus", "require_gpu": "bool"}


def add_options(group: Any) -> None:
    """Register --gpus and --require-gpu on the plugin's option group."""
    group.addoption(
        "--gpus",
        default=None,
        type=parse_gpus,
        metavar="all|N|device=I,J|none",
        help="GPUs to give the candidate for the gpu stage's usable check, as `docker run "
        "--gpus`. Default: all, when the host has any; none skips that check.",
    )
    group.addoption(
        "--require-gpu",
        action="store_true",
        default=False,
        dest="require_gpu",
        help="make the gpu stage's usable check a gate: fail, not skip, when no GPU can be "
        "used (no GPU on the host, no NVIDIA container toolkit, --gpus none).",
    )


def options_from_config(config: Any) -> dict[str, Any]:
    """The gpu entry of Target.options, from the command line."""
    gpus = config.getoption("gpus", default=None) or "all"
    return GpuOptions(gpus=gpus, require=bool(config.getoption("require_gpu", default=False))).to_dict()
