#!/usr/bin/env bash
# Fails unless tb_attention/static/ is exactly what a fresh build of frontend/ produces.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
[ -d node_modules ] || npm ci --no-audit --no-fund >/dev/null
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
node build.mjs "$tmp" >/dev/null 2>&1 || node build.mjs "$tmp"
if diff -r "$tmp" "$here/../tb_attention/static" >/dev/null; then
  echo "tb_attention/static matches a fresh build of frontend/"
else
  diff -rq "$tmp" "$here/../tb_attention/static" || true
  echo "tb_attention/static is stale: run 'npm run build' in frontend/ and commit the result" >&2
  exit 1
fi
