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

# Inside the server container, copied in through the archive API. At the root, which is a directory in every
# image, and not in /tmp: an image may have no /tmp, or a file there, and the client needs no temporary files.
DIRECTORY = "/.pytest-baseimage-client"
PYTHONS = ("python3", "python")  # tried in this order on the image's PATH
ANSWER_BYTES = 16 << 20  # the client's output is read up to here (engine.exec caps it while streaming)
SIDE_BODY_CHARS = 2000  # liveness and swagger bodies: only their status is judged, a little text helps a reader

# Python 2.7/3.5+ (no f-strings, time.time): it runs on whatever python the image has. It prints one answer
# line (marker + JSON) after each phase, flushed, so that a client killed with its server (a crash or OOM in
# run()) still leaves what it saw; the host reads the last complete one.
PROGRAM = r"""
import base64, errno, json, socket, sys, threading, time
try:
    import http.client as httplib
except ImportError:
    import httplib

PY2 = sys.version_info[0] == 2
CLOSED = (errno.ECONNREFUSED, errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED)
STARTED = time.time()


def native(value):
    # json gives unicode on Python 2, where httplib wants byte strings for the request line and headers.
    if PY2 and not isinstance(value, str):
        return value.encode("utf-8")
    return value


def text(value):
    # Header values arrive as bytes on Python 2; latin-1 maps every byte, as Python 3's http.client does.
    if isinstance(value, bytes) and not isinstance(value, type(u"")):
        return value.decode("latin-1")
    return value


def request(req, method, path, body, headers, timeout, body_chars, port=None):
    # `timeout` bounds the whole exchange, not each read: a server that drips one byte at a time must not
    # hold the client past it. A timer shuts the socket down at the deadline; the reads then end.
    started = time.time()
    out = {"method": method, "path": path, "status": None, "body": "", "headers": {}, "error": ""}
    port = port or req["port"]
    out["port"] = port
    conn = httplib.HTTPConnection(req.get("host", "127.0.0.1"), port, timeout=max(timeout, 0.05))
    expired = []
    timer = None
    try:
        conn.connect()
        sock = conn.sock

        def expire():
            expired.append(True)
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except (socket.error, OSError):
                pass

        timer = threading.Timer(max(started + timeout - time.time(), 0.0), expire)
        timer.daemon = True
        timer.start()
        sent = {"Connection": "close"}
        sent.update(headers)
        sent = dict((native(k), native(v)) for k, v in sent.items())
        conn.request(native(method), native(path), body=body, headers=sent)
        resp = conn.getresponse()
        data = resp.read(req["max_body"])
        if expired:
            raise socket.timeout()
        out["status"] = resp.status
        out["headers"] = dict((text(k).lower(), text(v)) for k, v in resp.getheaders())
        out["body"] = data.decode("utf-8", "replace")[:body_chars]
    except socket.timeout:
        out["error"] = "timeout"
    except (socket.error, httplib.HTTPException) as exc:
        closed = isinstance(exc, (httplib.BadStatusLine, httplib.IncompleteRead))
        if expired:
            out["error"] = "timeout"
        elif closed or getattr(exc, "errno", None) in CLOSED:
            out["error"] = "closed"
        else:
            out["error"] = text(("%s: %s" % (type(exc).__name__, exc))[:300])
    finally:
        if timer is not None:
            timer.cancel()
        conn.close()
        out["elapsed_s"] = time.time() - started
    return out


def listening(req, port=None):
    # The sockets listening on the port (every port when port is 0: as "address:port"), from the server's
    # network namespace: its own /proc/net/tcp when the client runs inside, /proc/<server pid>/net/tcp when
    # it runs on the engine's host.
    found = []
    port = req["port"] if port is None else port
    for name in req.get("listen_files", ["/proc/net/tcp", "/proc/net/tcp6"]):
        try:
            with open(name) as handle:
                lines = handle.read().splitlines()[1:]
        except (IOError, OSError):
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 3 and parts[3] == "0A" and ":" in parts[1]:
                address, hexport = parts[1].split(":", 1)
                if not port:
                    found.append("%s:%d" % (address, int(hexport, 16)))
                elif int(hexport, 16) == port:
                    found.append(address)
    return found


def loopback(address):
    # 127.0.0.0/8 (hex, host order: the last byte is the first octet), ::1, ::ffff:127.x.y.z
    if len(address) == 8:
        return address.upper().endswith("7F")
    upper = address.upper()
    return upper == "0" * 24 + "01000000" or (upper.startswith("0" * 16 + "FFFF0000") and upper.endswith("7F"))


def emit(req, out):
    out["ran_s"] = time.time() - STARTED
    sys.stdout.write("\n" + req["marker"] + json.dumps(out) + "\n")
    sys.stdout.flush()


def poll(req, out, key, path, port, deadline):
    # GET `path` until it answers 2xx or the deadline passes: the time it took, or None.
    side = req["side_body_chars"]
    while time.time() < deadline:
        out[key + "_polls"] = out.get(key + "_polls", 0) + 1
        remaining = deadline - time.time()
        last = request(req, "GET", path, None, {}, min(req["request_timeout_s"], remaining), side, port)
        out[key] = last
        if last["status"] is not None and 200 <= last["status"] < 300:
            return time.time() - STARTED
        if last["status"] in req.get("final_statuses", []):  # e.g. 404: the server is up, the route is not there
            return None
        if last["error"] == "closed" and req.get("stop_on_loopback"):
            found = listening(req, port)
            if found and all(loopback(a) for a in found):  # bound, but where the client cannot reach it
                return None
        time.sleep(max(min(req["poll_interval_s"], deadline - time.time()), 0))
    return None


def main(req, out):
    payload = base64.b64decode(req["payload_b64"])
    deadline = STARTED + req["boot_timeout_s"]
    side = req["side_body_chars"]
    out["healthy_after_s"] = poll(req, out, "liveness", req["liveness_path"], req.get("liveness_port"), deadline)
    out["polls"] = out.pop("liveness_polls", 0)
    if out["healthy_after_s"] is not None and req.get("readiness_path"):  # a custom container's second route
        ready = poll(req, out, "readiness", req["readiness_path"], req.get("readiness_port"), deadline)
        out["ready_after_s"] = ready
    out["listen"] = listening(req)
    if req.get("list_ports"):
        out["listen_all"] = listening(req, 0)
    emit(req, out)
    if out["healthy_after_s"] is None or (req.get("readiness_path") and out.get("ready_after_s") is None):
        return  # not live, or not ready: nothing is routed to it, so nothing is scored
    headers = {"Content-Type": req["content_type"]}
    body_chars = req["max_body"]
    out["score"] = request(req, "POST", req["score_path"], payload, headers, req["request_timeout_s"], body_chars)
    if out["score"]["status"] is not None:
        out["score_done_s"] = time.time() - STARTED
    emit(req, out)
    if req["swagger"]:
        out["swagger"] = request(req, "GET", req["swagger_path"], None, {}, req["request_timeout_s"], side)
        emit(req, out)


with open(sys.argv[1]) as handle:
    REQ = json.load(handle)
ANSWER = {"polls": 0, "healthy_after_s": None, "score_done_s": None, "liveness": None, "score": None,
          "swagger": None, "listen": []}
try:
    main(REQ, ANSWER)
except Exception as exc:  # a bug here must read as the client's failure, not as the server's
    ANSWER["client_error"] = text(("%s: %s" % (type(exc).__name__, exc))[:300])
ANSWER["done"] = True
emit(REQ, ANSWER)
"""


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
