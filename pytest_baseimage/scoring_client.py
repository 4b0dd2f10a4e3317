"""The scoring stage's HTTP client, which runs inside the server's own container, and the parsers of its answer.

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
import struct
from typing import Any

DIRECTORY = "/tmp/.pytest-baseimage-client"  # inside the server container; copied in through the archive API
PYTHONS = ("python3", "python")  # tried in this order on the image's PATH
ANSWER_CHARS = 8 << 20  # the client's answer is untrusted output of the image's own python: read this much

# Python 2.7/3.5+ (no f-strings, time.time): it runs on whatever python the image has.
PROGRAM = r"""
import base64, errno, json, socket, sys, time
try:
    import http.client as httplib
except ImportError:
    import httplib

CLOSED = (errno.ECONNREFUSED, errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED)


def request(req, method, path, body, headers, timeout):
    started = time.time()
    out = {"method": method, "path": path, "status": None, "body": "", "headers": {}, "error": ""}
    conn = httplib.HTTPConnection("127.0.0.1", req["port"], timeout=max(timeout, 0.05))
    try:
        sent = {"Connection": "close"}
        sent.update(headers)
        conn.request(method, path, body=body, headers=sent)
        resp = conn.getresponse()
        data = resp.read(req["max_body"])
        out["status"] = resp.status
        out["headers"] = dict((k.lower(), v) for k, v in resp.getheaders())
        out["body"] = data.decode("utf-8", "replace")
    except socket.timeout:
        out["error"] = "timeout"
    except (socket.error, httplib.HTTPException) as exc:
        closed = isinstance(exc, (httplib.BadStatusLine, httplib.IncompleteRead))
        if closed or getattr(exc, "errno", None) in CLOSED:
            out["error"] = "closed"
        else:
            out["error"] = ("%s: %s" % (type(exc).__name__, exc))[:300]
    finally:
        conn.close()
        out["elapsed_s"] = time.time() - started
    return out


def listening(port):
    found = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as handle:
                lines = handle.read().splitlines()[1:]
        except (IOError, OSError):
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 3 and parts[3] == "0A" and ":" in parts[1]:
                address, hexport = parts[1].split(":", 1)
                if int(hexport, 16) == port:
                    found.append(address)
    return found


def main():
    with open(sys.argv[1]) as handle:
        req = json.load(handle)
    payload = base64.b64decode(req["payload_b64"])
    started = time.time()
    deadline = started + req["boot_timeout_s"]
    out = {"polls": 0, "healthy_after_s": None, "score_done_s": None, "liveness": None, "score": None,
           "swagger": None}
    while time.time() < deadline:
        out["polls"] += 1
        remaining = deadline - time.time()
        last = request(req, "GET", req["liveness_path"], None, {}, min(req["request_timeout_s"], remaining))
        out["liveness"] = last
        if last["status"] is not None and 200 <= last["status"] < 300:
            out["healthy_after_s"] = time.time() - started
            break
        time.sleep(max(min(req["poll_interval_s"], deadline - time.time()), 0))
    if out["healthy_after_s"] is not None:
        headers = {"Content-Type": req["content_type"]}
        out["score"] = request(req, "POST", req["score_path"], payload, headers, req["request_timeout_s"])
        if out["score"]["status"] is not None:
            out["score_done_s"] = time.time() - started
        if req["swagger"]:
            out["swagger"] = request(req, "GET", req["swagger_path"], None, {}, req["request_timeout_s"])
    out["listen"] = listening(req["port"])
    sys.stdout.write("\n" + req["marker"] + json.dumps(out) + "\n")
    sys.stdout.flush()


main()
"""


def files(request: dict[str, Any], payload: bytes, marker: str) -> dict[str, bytes]:
    """The client and what it should do, as archive entries (paths without the leading slash)."""
    data = {**request, "payload_b64": base64.b64encode(payload).decode("ascii"), "marker": marker}
    root = DIRECTORY.lstrip("/")
    return {f"{root}/client.py": PROGRAM.encode("utf-8"), f"{root}/request.json": json.dumps(data).encode("utf-8")}


def command(python: str) -> list[str]:
    # -S: no site module, so none of the image's .pth files or sitecustomize run in the client (only stdlib).
    return [python, "-S", f"{DIRECTORY}/client.py", f"{DIRECTORY}/request.json"]


def parse_answer(stdout: str, marker: str) -> dict[str, Any] | None:
    """The client's JSON answer after the marker; None when there is none (killed, crashed, or garbled)."""
    text = stdout[-ANSWER_CHARS:]
    at = text.rfind(marker)
    if at < 0:
        return None
    try:
        data = json.loads(text[at + len(marker) :].strip().splitlines()[0])
    except (ValueError, IndexError):
        return None
    return data if isinstance(data, dict) else None


def number(value: Any) -> float | None:
    """A non-negative number from the untrusted answer, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value < 0:
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
