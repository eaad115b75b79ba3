#!/usr/bin/env bash
# Runs every test from a fresh machine: sets up .venv (scripts/setup.sh test), then the Python
# tests (real TensorBoard, real Chromium, real spaCy and models), the frontend unit tests and the
# check that the committed bundle equals a fresh build.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
. .venv/bin/activate
if [ -f frontend/package.json ]; then
  printf '\n== frontend: unit tests and bundle check\n'
  (cd frontend && npm test --silent)
  bash frontend/check_bundle.sh
fi
printf '\n== python tests\n'
python -m pytest tests "$@"
