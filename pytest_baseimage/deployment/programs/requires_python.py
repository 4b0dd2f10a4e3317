# Runs inside the candidate, as one of the probe's extensions (probe.EXTENSIONS): Python 2.7 and 3.5+, no
# imports beyond the standard library. It reads the Requires-Python of the installed distributions from
# their METADATA headers, as the probe reads Name and Version (regular files only, at most 64 KiB each), and
# sets `result` = {"requires_python": {name: specifier}}.
import os
import stat
import sys

LIMIT = 65536


def header(path):
    name = needs = None
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None, None
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        try:
            data = os.read(fd, LIMIT)
        finally:
            os.close(fd)
        for line in data.decode("utf-8", "replace").splitlines():
            if not line.strip():
                break
            if line.startswith("Name:") and name is None:
                name = line[5:].strip()
            elif line.startswith("Requires-Python:") and needs is None:
                needs = line[16:].strip()
    except Exception:
        pass
    return name, needs


found = {}
for entry in sys.path:
    if not entry or not os.path.isdir(entry):
        continue
    try:
        names = sorted(os.listdir(entry))
    except Exception:
        continue
    for n in names:
        if n.endswith(".dist-info"):
            dist, spec = header(os.path.join(entry, n, "METADATA"))
            if dist and spec and dist not in found:
                found[dist] = spec
result = {"requires_python": found}
