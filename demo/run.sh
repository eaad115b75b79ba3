#!/usr/bin/env bash
# The demo from a fresh machine: sets up .venv (scripts/setup.sh demo), builds the demo logdir
# (a small GPT-2 trained with a probe, its checkpoints, SmolLM2 and MiniLM analysed) and serves
# TensorBoard on it. `bash demo/run.sh --no-serve` builds the logdir and exits; other flags: --help.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
. .venv/bin/activate
exec python -m demo "$@"
