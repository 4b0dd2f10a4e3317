"""Where the scoring requests come from: the tool's own process, inside the server's network namespace (a
local engine and root: the server then needs no network at all), or on an internal network made for it (a
local engine), or none (the client then runs inside the server's container)."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .engine import Engine
from .scoring_data import ScoringSpec
from .scoring_spec import server_network


@dataclass(frozen=True)
class Route:
    """How the requests reach the server: the container's network, and who sends them."""

    network: str  # the container's network_mode
    from_host: bool  # this process sends the requests; False: the candidate's python relays them
    why: str = ""  # why this process cannot, when it cannot
    netns: bool = False  # this process's client enters the server's network namespace (`nsenter --net`)


@dataclass(frozen=True)
class Reach:
    """How this process's client reaches one started server: the address, and the command's prefix."""

    address: str
    prefix: tuple[str, ...] = ()


@contextmanager
def server_route(engine: Engine, spec: ScoringSpec) -> Iterator[Route]:
    """The route for one server: the engine's internal network where this process can reach it."""
    why = not_local(engine)
    if why:
        yield Route(spec.network, False, why)
        return
    if spec.network == "bridge":  # the profile wants egress: the default bridge, asked from here
        reachable = _reachable(_gateway(engine, "bridge"))
        yield Route("bridge", reachable, "" if reachable else UNREACHABLE)
        return
    if can_enter_namespaces():  # no network to make, join or remove: the fastest route, and no egress
        yield Route("none", True, netns=True)
        return
    try:
        network = engine.internal_network()
        gateway = _gateway(engine, network.id)
        if not gateway:  # removed under us (a sweep of this session's objects): made anew, once
            engine.release_network(only=network)
            network = engine.internal_network()
            gateway = _gateway(engine, network.id)
    except Exception as exc:  # e.g. the engine's address pools are exhausted: the relayed client still works
        yield Route("none", False, f"could not create an internal network for the server ({type(exc).__name__})")
        return
    yield Route(network.name, True) if _reachable(gateway) else Route("none", False, UNREACHABLE)


UNREACHABLE = (
    "the engine's container networks are not on this machine's network (a rootless engine, or this runs in a container)"
)


def not_local(engine: Engine) -> str:
    """Why this process cannot share a network with the engine's containers; "" when it may."""
    if not sys.platform.startswith("linux"):
        return f"the engine runs in a virtual machine on {sys.platform}"
    if not engine.host.startswith("unix://"):
        return f"the engine at {engine.host} is not on this machine"
    return ""


def can_enter_namespaces() -> bool:
    """Whether this process may run its client inside a container's network namespace: root, with util-linux's
    `nsenter` (a local engine's containers' namespaces are files on this machine: `SandboxKey`)."""
    return sys.platform.startswith("linux") and os.geteuid() == 0 and shutil.which(NSENTER) is not None


NSENTER = "nsenter"
NOT_ENTERED = "could not enter the server's network namespace from this process"


def reach(box: Any, route: Route) -> Reach | str | None:
    """How this process's client reaches the started server `box`; None when the server is already gone (its
    state says why); a string when this process cannot reach it after all (then the candidate relays).

    Inside its namespace the client asks 127.0.0.1: the server needs no network, and a server that listens on
    loopback only still fails, from the sockets the client reads (`loopback-only`)."""
    try:
        box.reload()
        settings = box.attrs["NetworkSettings"]
        pid = int(box.attrs["State"]["Pid"])
    except Exception:
        return None
    if not pid:
        return None
    if not route.netns:
        address = (settings.get("Networks") or {}).get(route.network, {}).get("IPAddress") or ""
        return Reach(address) if address else None
    key = str(settings.get("SandboxKey") or "")
    prefix = (shutil.which(NSENTER) or NSENTER, f"--net={key}", "--")
    try:  # a rootless engine's, or one seen from inside a container, is not a file here: then relay
        entered = key and subprocess.run([*prefix, "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        entered = False
    return Reach("127.0.0.1", prefix) if entered else NOT_ENTERED


def _gateway(engine: Engine, network: str) -> str:
    """The network's gateway (the bridge's address on the engine's host); from the subnet when not listed."""
    try:
        configs = (engine.client.api.inspect_network(network).get("IPAM") or {}).get("Config") or []
    except Exception:
        return ""
    for config in configs:
        if config.get("Gateway"):
            return str(config["Gateway"]).split("/")[0]
        with contextlib.suppress(ValueError, KeyError, IndexError):
            return str(ipaddress.ip_network(config["Subnet"])[1])
    return ""


def _reachable(address: str) -> bool:
    """True when `address` is one of this machine's own: the bridge is here, so its containers are reachable."""
    if not address:
        return False
    try:
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe_socket:
            probe_socket.bind((address, 0))
    except OSError:
        return False
    return True


def warm_scoring(check: Any) -> None:
    """Begin making the server's network while pytest collects, where the server will run on it."""
    wants_bridge = server_network(check.profile.section("scoring") or {}) == "bridge"
    if not wants_bridge and not not_local(check.engine) and not can_enter_namespaces():
        check.engine.warm_internal_network()
