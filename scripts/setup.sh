#!/usr/bin/env bash
# First-time setup (the README's first command), safe to re-run:
#   1. installs the build dependencies with apt-get when any is missing (Debian/Ubuntu; sudo only
#      when not root): cmake, g++, make, Eigen 3.4, Catch2 2.x, Google Benchmark; optionally clang
#      (the sanitizer build of the test command);
#   2. configures build/ (Release) unless it is configured already, and builds it;
#   3. fetches the real model (scripts/get-models.sh: SmolLM2-135M GGUF into ~/.cache/memattn/models)
#      and the Python packages of the reference tests (tests/llama/requirements.txt, pip --user);
#   4. runs the CPU quickstart and the real-model demo (memattn-llama on stories260K and SmolLM2).
# CUDA is optional: when nvcc is found (PATH or /usr/local/cuda) the CUDA target, GPU tests and
# compile checks are built too.
#   bash scripts/setup.sh              everything above
#   bash scripts/setup.sh --deps-only  steps 1 and 3 (used by .ci/run)
# Environment: MEMATTN_JOBS (parallel build jobs, default: number of CPUs).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
JOBS="${MEMATTN_JOBS:-$(nproc 2>/dev/null || echo 2)}"
DEPS=(cmake g++ make libeigen3-dev catch2 libbenchmark-dev)
# Optional: Clang and its sanitizer runtimes for the test command's ASan/UBSan build (it falls back
# to g++ without them); a distribution that names them differently only skips them.
OPTIONAL_DEPS=(clang libclang-rt-dev)

install_deps() {
  if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: not a Debian/Ubuntu system; install ${DEPS[*]} (or equivalents) yourself" >&2
    return 0
  fi
  local missing=() optional=() pkg
  for pkg in "${DEPS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  for pkg in "${OPTIONAL_DEPS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      optional+=("$pkg")
    fi
  done
  if [ "${#missing[@]}" -eq 0 ] && [ "${#optional[@]}" -eq 0 ]; then
    echo "setup: dependencies present (${DEPS[*]} ${OPTIONAL_DEPS[*]})"
    return 0
  fi
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "setup: missing packages ${missing[*]}, and not root without sudo: install them and re-run" >&2
      return 1
    fi
    sudo=(sudo)
  fi
  ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -q
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
  if [ "${#optional[@]}" -gt 0 ]; then
    echo "setup: installing (optional) ${optional[*]}"
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${optional[@]}" ||
      echo "setup: WARNING: could not install ${optional[*]}; the sanitizer build uses g++" >&2
  fi
}

# The real model and the reference tests' Python packages. Failures here only skip the tests that
# need them (they report "skipped"), so they warn instead of stopping the setup.
fetch_models() {
  if ! bash scripts/get-models.sh >/dev/null; then
    echo "setup: WARNING: could not fetch the SmolLM2 model; its tests will be skipped" >&2
  fi
  if command -v python3 >/dev/null 2>&1; then
    if ! python3 -c "import gguf, numpy, tokenizers" >/dev/null 2>&1; then
      python3 -m pip install -q -r tests/llama/requirements.txt ||
        echo "setup: WARNING: pip could not install tests/llama/requirements.txt; the reference test will be skipped" >&2
    fi
  fi
}

install_deps
fetch_models
if [ "${1:-}" = "--deps-only" ]; then
  exit 0
fi

if [ ! -f build/CMakeCache.txt ]; then
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
fi
cmake --build build -j "$JOBS"
echo
echo "setup: running build/bin/quickstart_cpu"
build/bin/quickstart_cpu

DATA="${MEMATTN_DATA_DIR:-../shared/data}"
MODELS="${MEMATTN_MODELS_DIR:-${HOME:-/tmp}/.cache/memattn/models}"
if [ -f "$DATA/stories260K/stories260K.bin" ]; then
  echo
  echo "setup: memattn-llama on stories260K (greedy from BOS), then its perplexity"
  build/bin/memattn-llama generate --model "$DATA/stories260K/stories260K.bin" --prompt "" --max-tokens 60
  build/bin/memattn-llama ppl --model "$DATA/stories260K/stories260K.bin" --text "$DATA/text/tinystories-sample.txt" --ctx 257
fi
if [ -f "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  echo
  echo "setup: memattn-llama on SmolLM2-135M-Instruct (--chat)"
  build/bin/memattn-llama generate --model "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" --chat \
    --prompt "What is the capital of France?" --max-tokens 40
fi
