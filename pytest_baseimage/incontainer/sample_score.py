"""pytest-baseimage sample entry script: a linear model read from AZUREML_MODEL_DIR."""

import contextlib  # noqa: F401  (unused, kept as the sample always was: same script, same verdicts)
import ipaddress  # noqa: F401
import json
import os

model = None


def init():
    global model
    path = os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.json")
    with open(path) as handle:
        model = json.load(handle)


def run(raw_data):
    rows = json.loads(raw_data)["data"]
    weights, bias = model["weights"], model["bias"]
    return {"result": [sum(w * x for w, x in zip(weights, row)) + bias for row in rows]}
