"""The demo's entry script: init() loads the linear model Azure ML put under AZUREML_MODEL_DIR, run() scores."""

import json
import os

model = None


def init():
    global model
    with open(os.path.join(os.environ["AZUREML_MODEL_DIR"], "model", "model.json")) as handle:
        model = json.load(handle)


def run(raw_data):
    rows = json.loads(raw_data)["data"]
    return {"result": [sum(w * x for w, x in zip(model["weights"], row)) + model["bias"] for row in rows]}
