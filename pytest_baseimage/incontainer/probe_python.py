"""The probe's Python program, run as `python -c <this> <request JSON>` in the candidate's own interpreter.

It reads nothing it has not checked is a regular file (a FIFO would block), at most 64 KiB of each, and
writes its answer as one length-framed record (`<marker>json <length>\\n<JSON>`), so output around it (a
sitecustomize) cannot shift it. The request: {"imports": [module, ...], "marker": "..."}.
"""

import json
import os
import platform
import stat
import sys
import traceback


def meta(path):
    name = version = requires = None
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None, None, None
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            data = os.read(fd, 65536)
        finally:
            os.close(fd)
        for line in data.decode("utf-8", "replace").splitlines():
            if not line.strip():
                break
            if line.startswith("Name:") and name is None:
                name = line[5:].strip()
            elif line.startswith("Version:") and version is None:
                version = line[8:].strip()
            elif line.startswith("Requires-Python:") and requires is None:
                requires = line[16:].strip()
    except Exception:
        pass
    return name, version, requires


def dists(found, requires):
    """Every installed distribution's name and version (and the Python it requires, where it says) from
    sys.path's metadata; the first one found wins."""
    for entry in sys.path:
        if not entry or not os.path.isdir(entry):
            continue
        try:
            names = sorted(os.listdir(entry))
        except Exception:
            continue
        for n in names:
            p = os.path.join(entry, n)
            if n.endswith(".dist-info"):
                p = os.path.join(p, "METADATA")
            elif n.endswith(".egg-info"):
                if os.path.isdir(p):
                    p = os.path.join(p, "PKG-INFO")
            else:
                continue
            name, version, needs = meta(p)
            if name and version and name not in found:
                found[name] = version
                if needs:
                    requires[name] = needs


def imports(modules, results):
    for mod in modules:
        try:
            __import__(mod)
            results[mod] = {"ok": True}
        except BaseException:
            results[mod] = {"ok": False, "traceback": traceback.format_exc()[-6000:]}


def main(argv):
    req = json.loads(argv[1])
    out = {
        "version": "%d.%d.%d" % tuple(sys.version_info[:3]),
        "executable": sys.executable,
        "implementation": platform.python_implementation(),
        "uid": os.getuid(),
        "dists": {},
        "requires_python": {},
        "imports": {},
    }
    dists(out["dists"], out["requires_python"])
    imports(req.get("imports", []), out["imports"])
    data = json.dumps(out, default=repr)
    sys.stdout.write(req["marker"] + "json " + str(len(data)) + "\n" + data)
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv)
