#!/usr/bin/env bash
# Install visiontune into the current Python (activate your venv first if you use one).
# torch goes first: a bare `torch` requirement on an empty environment pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install -q "torch==2.13.0" || "$PY" -m pip install -q torch
fi
"$PY" -m pip install -q -e ".[test]"
if ! command -v java >/dev/null 2>&1; then
    echo "note: no Java found; METEOR and the PTB tokenizer will be skipped (apt-get install default-jre-headless)" >&2
fi
