"""The scoring stage's HTTP client, which runs inside the server's own container, and readers of its fields.

Why inside: the server then needs no published port and, by default, no network at all (`--network=none`
keeps a loopback interface), and the stage works the same on a remote engine (ssh://, tcp://, a context) as
on a local one. What it needs is an interpreter: python (2.7, or 3.5 and later, as the probe) on the image's
PATH, which every Azure ML inference image has, since score.py is Python. Besides the requests, the client
reports the sockets that listen on the server's port, so that a server bound to 127.0.0.1 only, which
nothing outside its container can reach, is named as such instead of passing.

Everything here is pure; `scoring.run_server` copies the files in and runs the command.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import struct
from typing import Any

from . import incontainer

# Inside the server container, copied in through the archive API. At the root, which is a directory in every
# image, and not in /tmp: an image may have no /tmp, or a file there, and the client needs no temporary files.
DIRECTORY = "/.pytest-baseimage-client"
PYTHONS = ("python3", "python")  # tried in this order on the image's PATH
ANSWER_BYTES = 16 << 20  # the client's output is read up to here (engine.exec caps it while streaming)
SIDE_BODY_CHARS = 2000  # liveness and swagger bodies: only their status is judged, a little text helps a reader

# The client (incontainer/scoring_client.py), copied into the server's container and run there.
PROGRAM = incontainer.source("scoring_client.py")


def files(request: dict[str, Any], payload: bytes, marker: str) -> dict[str, bytes]:
    """The client and what it should do, as archive entries (paths without the leading slash)."""
    data = {
        **request,
        "payload_b64": base64.b64encode(payload).decode("ascii"),
        "marker": marker,
        "side_body_chars": SIDE_BODY_CHARS,
    }
    root = DIRECTORY.lstrip("/")
    return {f"{root}/client.py": PROGRAM.encode("utf-8"), f"{root}/request.json": json.dumps(data).encode("utf-8")}


def command(python: str) -> list[str]:
    # -E: no PYTHONPATH (an image's modules must not shadow json or socket); -S: no site module, so none of
    # the image's .pth files or sitecustomize run in the client. Both exist on 2.7 and 3.x; -I is 3.4+ only.
    return [python, "-E", "-S", f"{DIRECTORY}/client.py", f"{DIRECTORY}/request.json"]


def number(value: Any) -> float | None:
    """A non-negative number from the untrusted answer, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return float(value)


def listen_address(hex_address: str) -> str:
    """One /proc/net/tcp{,6} local address (hex, 32-bit words in host order) as text; "" when malformed."""
    if len(hex_address) not in (8, 32):
        return ""
    try:
        words = [int(hex_address[i : i + 8], 16) for i in range(0, len(hex_address), 8)]
        ip = ipaddress.ip_address(b"".join(struct.pack("<I", word) for word in words))
    except (ValueError, struct.error):
        return ""
    mapped = getattr(ip, "ipv4_mapped", None)  # written as ::ffff:127.0.0.1 on every Python version
    return f"::ffff:{mapped}" if mapped else str(ip)


def loopback_only(addresses: list[str]) -> bool:
    """True when the port listens, but only on loopback addresses (unreachable from outside the container)."""
    parsed = []
    for address in addresses:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False  # cannot tell: do not accuse the server
        mapped = getattr(ip, "ipv4_mapped", None)
        parsed.append((mapped or ip).is_loopback)
    return bool(parsed) and all(parsed)
