"""Layers 1 and 2 of the gpu stage, run as `python -c <this> <config JSON> <marker>` in the candidate, in an
exec of its own (gpu.run_probe): a slow or hanging ONNX Runtime import then costs the gpu stage its budget
and nothing else. It runs ort_session.py (layer 1) in a child process, then resolves the provider libraries
(layer 2) with ldd and the linker cache. The config (gpu.probe_config): ort (ort_session's request),
ort_program (its source), provider_libraries, timeout. The answer is one line, marker + JSON.
"""

import json
import os
import subprocess
import sys
import traceback

LIMIT = 200000
LOADERS = ("/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1", "/lib/ld-linux-x86-64.so.2")
DIRS = (
    "/lib",
    "/usr/lib",
    "/lib64",
    "/usr/lib64",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
)


def _text(data):
    try:
        return (data or b"").decode("utf-8", "replace")
    except AttributeError:
        return data


def _run(cmd, timeout):
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        return {"rc": 127, "out": "", "err": str(exc)}
    try:
        out, err = proc.communicate(timeout=timeout)
    except TypeError:
        out, err = proc.communicate()
    except Exception:
        proc.kill()
        out, err = proc.communicate()
        return {"rc": -9, "out": _text(out)[:LIMIT], "err": "timed out after %d s" % timeout}
    return {"rc": proc.returncode, "out": _text(out)[:LIMIT], "err": _text(err)[-LIMIT:]}


def _ldd(path):
    tried = []
    for cmd in [["ldd", path]] + [[ld, "--list", path] for ld in LOADERS if os.path.exists(ld)]:
        res = _run(cmd, 60)
        if res["rc"] != 127 or res["out"]:
            res["tool"] = cmd[0]
            return res
        tried.append("%s: %s" % (cmd[0], res["err"][:200]))
    return {"rc": 127, "out": "", "err": "; ".join(tried) or "no ldd", "tool": ""}


def _sonames(d):
    try:
        return sorted(n for n in os.listdir(d) if ".so" in n)[:3000]
    except OSError:
        return None


def _package_dir():
    for entry in sys.path:
        d = os.path.join(entry or os.getcwd(), "onnxruntime")
        if os.path.isfile(os.path.join(d, "__init__.py")):
            return os.path.abspath(d)
    return ""


def probe(cfg):
    result = {}
    run = _run([sys.executable, "-c", cfg["ort_program"], json.dumps(cfg["ort"])], cfg["timeout"])
    result["ort_run"] = {"rc": run["rc"], "stderr": run["err"][-6000:]}
    result["ort"] = None
    for line in run["out"].splitlines():
        if line.startswith(cfg["ort"]["marker"]):
            result["ort"] = json.loads(line[len(cfg["ort"]["marker"]) :])
    pkg = ((result["ort"] or {}).get("file") and os.path.dirname(result["ort"]["file"])) or _package_dir()
    capi = os.path.join(pkg, "capi") if pkg else ""
    result["package_dir"] = pkg
    result["capi_files"] = _sonames(capi) if capi else None
    libs = {}
    for provider, name in sorted(cfg["provider_libraries"].items()):
        path = os.path.join(capi, name)
        libs[provider] = {"file": name, "path": path, "exists": bool(capi) and os.path.isfile(path)}
        if libs[provider]["exists"]:
            libs[provider]["ldd"] = _ldd(path)
    result["provider_libraries"] = libs
    core = [n for n in (result["capi_files"] or []) if n.startswith("onnxruntime_pybind11_state") and n.endswith(".so")]
    result["core"] = {"file": core[0], "ldd": _ldd(os.path.join(capi, core[0]))} if core else None
    result["ldconfig"] = {"rc": 127, "out": "", "err": "no ldconfig"}
    for exe in ("ldconfig", "/sbin/ldconfig", "/usr/sbin/ldconfig"):
        res = _run([exe, "-p"], 60)
        if res["rc"] == 0:
            result["ldconfig"] = res
            break
    result["ld_library_path"] = os.environ.get("LD_LIBRARY_PATH", "")
    search = {}
    for d in [p for p in result["ld_library_path"].split(":") if p] + list(DIRS) + ([capi] if capi else []):
        names = _sonames(d)
        if names is not None:
            search[d] = names
    result["search"] = search
    pip_nvidia = {}
    for entry in sys.path:
        base = os.path.join(entry or os.getcwd(), "nvidia")
        if os.path.isdir(base):
            for sub in sorted(os.listdir(base)):
                names = _sonames(os.path.join(base, sub, "lib"))
                if names:
                    pip_nvidia[os.path.join(base, sub, "lib")] = names
    result["pip_nvidia"] = pip_nvidia
    return result


def main(argv):
    try:
        out = probe(json.loads(argv[1]))
    except BaseException:
        out = {"error": traceback.format_exc()[-6000:]}
    sys.stdout.write("\n" + argv[2] + json.dumps(out) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv)
