#!/usr/bin/env bash
# Runs every test from a fresh machine: sets up .venv (scripts/setup.sh test), then the Python
# tests (real TensorBoard, real Chromium, real spaCy and models), the frontend unit tests and the
# checks that the committed bundle and decoder fixtures equal fresh ones.
# Arguments go to pytest, e.g. `bash tests/run.sh -m "not browser and not server"` (the fast subset).
# `bash tests/run.sh --latest [pytest arguments]` runs it all against the newest releases instead of
# requirements-lock.txt, in .venv-latest (BUILD.md, "Dependencies": how the lock moves).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
if [ "${1:-}" = --latest ]; then
  shift
  bash scripts/setup.sh test --latest
  venv=.venv-latest
else
  bash scripts/setup.sh test
fi
. "$venv/bin/activate"
printf '\n== lint: ruff (pyproject.toml)\n'
ruff check .
if [ -f frontend/package.json ]; then
  printf '\n== frontend: decoder fixtures regenerated from the Python encoder must equal the committed ones\n'
  before="$(mktemp -d)"
  trap 'rm -rf "$before"' EXIT
  cp -r frontend/test/fixtures "$before/fixtures"
  python frontend/test/make_fixtures.py
  if ! diff -r "$before/fixtures" frontend/test/fixtures > /dev/null; then
    echo "frontend/test/fixtures changed when regenerated (python frontend/test/make_fixtures.py):" >&2
    diff -rq "$before/fixtures" frontend/test/fixtures >&2 || true
    echo "the storage format and the committed fixtures disagree: review and commit the new fixtures" >&2
    exit 1
  fi
  printf '\n== frontend: strict type check, unit tests (layering included) and bundle check\n'
  (cd frontend && npm run typecheck --silent && npm test --silent)
  bash frontend/check_bundle.sh
fi
printf '\n== python tests\n'
python -m pytest tests "$@"
