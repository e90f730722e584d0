#!/usr/bin/env bash
# Create (or reuse) .venv with the pinned CPU torch and the dev requirements.
# torch is installed first and then pinned through PIP_CONSTRAINT, so no later
# install can pull a different (multi-GB CUDA) build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
export PIP_CONSTRAINT="$PWD/constraints.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp=.venv/.flashvideo-deps
want=$(cat constraints.txt requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/pip install -q "torch==2.13.0"
  .venv/bin/pip install -q -r requirements-dev.txt
  echo "$want" > "$stamp"
fi
