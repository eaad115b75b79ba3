#!/usr/bin/env bash
# Fails unless tb_attention/serve/static/ is exactly what a fresh build of frontend/ produces (both
# bundles, index.js and embed.js, and their license files; the build itself fails when embed.js
# could not be inlined in a <script> element), and src/generated/schema.ts exactly what
# scripts/gen_schema.py writes from the backend's schema.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
[ -d node_modules ] || npm ci --no-audit --no-fund >/dev/null
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python="${PYTHON:-$(command -v python || command -v python3)}"  # with numpy (tb_attention.metadata)
mkdir "$tmp/schema"
"$python" scripts/gen_schema.py "$tmp/schema/schema.ts"
if diff -q "$tmp/schema/schema.ts" src/generated/schema.ts >/dev/null; then
  echo "src/generated/schema.ts matches the backend's schema"
else
  diff -u src/generated/schema.ts "$tmp/schema/schema.ts" || true
  echo "src/generated/schema.ts is stale: run 'python frontend/scripts/gen_schema.py' and commit it (then rebuild)" >&2
  exit 1
fi
node build.mjs "$tmp/bundle" >/dev/null 2>&1 || node build.mjs "$tmp/bundle"
if diff -r "$tmp/bundle" "$here/../tb_attention/serve/static" >/dev/null; then
  echo "tb_attention/serve/static matches a fresh build of frontend/"
else
  diff -rq "$tmp/bundle" "$here/../tb_attention/serve/static" || true
  echo "tb_attention/serve/static is stale: run 'npm run build' in frontend/ and commit the result" >&2
  exit 1
fi
