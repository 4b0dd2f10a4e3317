#!/usr/bin/env bash
# Admission gate for an Azure ML base image: run it in CI right after the push.
#
#   IMAGE=myacr.azurecr.io/team/base@sha256:<digest> examples/gate.sh
#
# Inputs (environment):
#   IMAGE              required; pin it by digest (the push prints it): a tag could move under the gate.
#   PROFILE            requirement set, a built-in name or a .toml file (default: azureml-current).
#   REGISTRY           private registry address; with REGISTRY_USERNAME, the password is read from the
#   REGISTRY_USERNAME  environment variable REGISTRY_PASSWORD (never put it on a command line).
#   OUT                where the reports go (default: ./baseimage-gate); keep it as a CI artifact.
# Without REGISTRY_USERNAME the Docker config's credentials are used (docker login, credential helpers).
#
# Exit codes (pytest-baseimage's, stable): 0 admit; 1 reject (not compatible); 2 could not be checked
# (pull failed, daemon down, interrupted: retry, do not admit); 3 internal error (a bug: report it);
# 4 usage error (the gate itself is misconfigured: fix it). Anything but 0 blocks the image.
set -uo pipefail

: "${IMAGE:?set IMAGE to registry/repository@sha256:<digest>}"
PROFILE="${PROFILE:-azureml-current}"
OUT="$(mkdir -p "${OUT:-baseimage-gate}" && cd "${OUT:-baseimage-gate}" && pwd)"
PYTHON="${PYTHON:-python3}"
if [[ -f "$PROFILE" ]]; then PROFILE="$(cd "$(dirname "$PROFILE")" && pwd)/$(basename "$PROFILE")"; fi

args=(
  -p no:cacheprovider -q
  --base-image="$IMAGE" --base-image-profile="$PROFILE"
  --require-digest          # refuse a moving tag (exit 4)
  --pull=missing            # a digest never changes: pull only when the engine does not have it
  --compat-json="$OUT/verdict.json" --compat-html="$OUT/report.html" --junitxml="$OUT/junit.xml"
)
if [[ -n "${REGISTRY:-}" ]]; then
  args+=(--registry="$REGISTRY")
  if [[ -n "${REGISTRY_USERNAME:-}" ]]; then
    args+=(--registry-username="$REGISTRY_USERNAME" --registry-password-env=REGISTRY_PASSWORD)
  fi
fi

# Run from the report directory, so that no conftest.py or pytest.ini of the calling repo is picked up.
(cd "$OUT" && "$PYTHON" -m pytest "${args[@]}") 2>&1 | tee "$OUT/gate.log"
code=${PIPESTATUS[0]}

# The JSON carries the same verdict as the exit code, and the exact digest that was tested.
if [[ -f "$OUT/verdict.json" ]]; then
  "$PYTHON" - "$OUT/verdict.json" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))
for image in run["images"]:
    gaps = "".join(f", {gap['stage']} not checked" for gap in image.get("not_checked", []))
    print(f"gate: {image['info']['digest'] or image['name']}: {image['verdict']}{gaps}")
PY
fi

case "$code" in
  0) echo "gate: ADMIT $IMAGE" ;;
  1) echo "gate: REJECT $IMAGE: not compatible with profile $PROFILE (see $OUT/report.html)" ;;
  2) echo "gate: NOT CHECKED $IMAGE: the image could not be checked; retry (see $OUT/gate.log)" ;;
  3) echo "gate: INTERNAL ERROR in pytest-baseimage; report it with $OUT/gate.log" ;;
  4) echo "gate: USAGE ERROR: the gate's options are wrong (see $OUT/gate.log)" ;;
  5) echo "gate: NOTHING SELECTED: -k/-m left no stage to run; nothing was judged (see $OUT/gate.log)" ;;
  *) echo "gate: unexpected exit code $code" ;;
esac
exit "$code"
