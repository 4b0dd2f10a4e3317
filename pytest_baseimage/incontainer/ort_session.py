"""Layer 1 of the gpu stage (and a session, when asked), run as `python -c <this> <request JSON>` in the
candidate or its GPU container, in a process of its own: importing a broken ONNX Runtime can crash.

The request (gpu.ort_request): marker, session, nvidia_smi, providers, options, model (base64), inputs. The
answer is one line, marker + JSON, after a newline.
"""

import base64
import json
import sys
import traceback


def run_session(ort, req):
    s = {"requested": req["providers"]}
    try:
        model = base64.b64decode(req["model"].encode("ascii"))
        named = [(p, req["options"][p]) if req["options"].get(p) else p for p in req["providers"]]
        try:
            sess = ort.InferenceSession(model, sess_options=ort.SessionOptions(), providers=named)
        except TypeError:
            sess = ort.InferenceSession(model, sess_options=ort.SessionOptions(), providers=req["providers"])
        s["providers"] = list(sess.get_providers())
        try:
            s["provider_options"] = sess.get_provider_options()
        except Exception:
            pass
        import numpy

        feed = dict((k, numpy.array([v], dtype=numpy.float32)) for k, v in req["inputs"].items())
        s["output"] = [float(v) for v in sess.run(None, feed)[0].reshape(-1)]
    except BaseException:
        s["error"] = traceback.format_exc()[-4000:]
    return s


def smi():
    import subprocess

    res = {}
    for key, cmd in (("summary", ["nvidia-smi"]), ("gpus", ["nvidia-smi", "-L"])):
        try:
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            res[key] = p.communicate()[0].decode("utf-8", "replace")[-4000:]
        except OSError as exc:
            res[key] = "not available: %s" % exc
    return res


def ask(req):
    out = {}
    try:
        import onnxruntime as ort

        out["import_ok"] = True
    except BaseException:
        out["import_ok"] = False
        out["import_error"] = traceback.format_exc()[-4000:]
    if out["import_ok"]:
        out["version"] = str(getattr(ort, "__version__", ""))
        out["file"] = getattr(ort, "__file__", "") or ""
        try:
            out["available"] = list(ort.get_available_providers())
        except BaseException:
            out["available_error"] = traceback.format_exc()[-4000:]
        try:
            out["device"] = ort.get_device()
        except BaseException:
            pass
        try:
            # The OpenVINO device list has no public name in any ONNX Runtime release: this reads the image's own
            # build, and a build without it only leaves the list out.
            from onnxruntime.capi import _pybind_state

            out["openvino_devices"] = list(_pybind_state.get_available_openvino_device_ids())
        except BaseException:
            pass
        if req.get("session"):
            out["session"] = run_session(ort, req)
    if req.get("nvidia_smi"):
        out["nvidia_smi"] = smi()
    return out


if __name__ == "__main__":
    REQ = json.loads(sys.argv[1])
    ANSWER = ask(REQ)
    sys.stdout.write("\n" + REQ["marker"] + json.dumps(ANSWER) + "\n")
    sys.stdout.flush()
