#!/usr/bin/env bash
# What only the tests need, on top of scripts/setup.sh: pytest and the test clients, llama.cpp (the GGUF
# exports run in it), node with transformers.js (the ONNX exports run in it) and Chromium (the served page).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q -e ".[test]"
# llama-cpp-python is source-only on PyPI: pip builds llama.cpp with its multimodal library (about 6 min on 2
# cores) and keeps the wheel in its cache. GGML_NATIVE=OFF: a cached wheel must run on any x86-64 with AVX2.
if ! "$PY" -c "import llama_cpp.mtmd_cpp" 2>/dev/null; then
    CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" "$PY" -m pip install -q -e ".[llama-cpp]"
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
