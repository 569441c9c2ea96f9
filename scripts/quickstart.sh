#!/usr/bin/env bash
# The main job on a fresh machine: set up, then a real fine-tune + evaluation + merge, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
${PYTHON:-python3} -m visiontune quickstart --output "${1:-runs/quickstart}"
