"""The default bridge's gateway address, read wherever this engine keeps it.

Newer engines list it in the network's IPAM config; Debian 12's docker.io 20.10 lists only the `Subnet`
there, and the address lives on the bridge interface (docker0). The tests that make an engine look remote
listen on this address: it is this machine's, and not loopback.
"""

from __future__ import annotations

import ipaddress
import re
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"


def interface_address(name: str) -> str | None:
    """The first IPv4 address of a host interface (`ip -4 addr show dev NAME`), or None."""
    try:
        done = subprocess.run(
            ["ip", "-4", "-o", "addr", "show", "dev", name], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"\binet (\d+\.\d+\.\d+\.\d+)/", done.stdout)
    return found.group(1) if found else None


def bridge_gateway(attrs: Mapping[str, Any], address_of: Callable[[str], str | None] = interface_address) -> str:
    """The gateway of a bridge network from its `docker network inspect` attributes: the IPAM Gateway if
    listed, else the address of the bridge interface it names, else the first host of its IPv4 subnet."""
    configs = [c for c in (attrs.get("IPAM") or {}).get("Config") or [] if ":" not in c.get("Subnet", "")]
    for config in configs:
        if config.get("Gateway"):
            return str(config["Gateway"]).split("/")[0]
    bridge = (attrs.get("Options") or {}).get(BRIDGE_NAME_OPTION)
    address = address_of(bridge) if bridge else None
    if address:
        return address
    for config in configs:
        if config.get("Subnet"):
            return str(next(ipaddress.ip_network(config["Subnet"], strict=False).hosts()))
    raise LookupError(f"network {attrs.get('Name')!r} lists no IPv4 gateway, bridge interface or subnet")
