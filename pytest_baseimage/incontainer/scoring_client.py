"""The scoring stage's request client, copied into the server's container and run there as
`python -E -S client.py request.json` (scoring_client.command), on Python 2.7 or 3.5+ (no f-strings,
time.time). It prints one answer line (marker + JSON) after each phase, flushed, so that a client killed with
its server (a crash or OOM in run()) still leaves what it saw; the host reads the last complete one.
"""

import base64
import errno
import json
import socket
import sys
import threading
import time

try:
    import http.client as httplib
except ImportError:
    import httplib

PY2 = sys.version_info[0] == 2
CLOSED = (errno.ECONNREFUSED, errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED)
STARTED = time.time()
UNICODE = type(b"".decode("ascii"))  # unicode on Python 2, str on 3 (a u"" prefix would be formatted away)


def native(value):
    # json gives unicode on Python 2, where httplib wants byte strings for the request line and headers.
    if PY2 and not isinstance(value, str):
        return value.encode("utf-8")
    return value


def text(value):
    # Header values arrive as bytes on Python 2; latin-1 maps every byte, as Python 3's http.client does.
    if isinstance(value, bytes) and not isinstance(value, UNICODE):
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


def run(path):
    with open(path) as handle:
        req = json.load(handle)
    answer = {
        "polls": 0,
        "healthy_after_s": None,
        "score_done_s": None,
        "liveness": None,
        "score": None,
        "swagger": None,
        "listen": [],
    }
    try:
        main(req, answer)
    except Exception as exc:  # a bug here must read as the client's failure, not as the server's
        answer["client_error"] = text(("%s: %s" % (type(exc).__name__, exc))[:300])
    answer["done"] = True
    emit(req, answer)


if __name__ == "__main__":
    run(sys.argv[1])
