#!/usr/bin/env bash
# The test suite on a fresh machine: set up, then every test (slow ones included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup-tests.sh
${PYTHON:-python3} -m pytest -q "$@"
