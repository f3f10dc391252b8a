#!/usr/bin/env bash
# First-time setup (the README's first command), safe to re-run:
#   1. installs the build dependencies with apt-get when any is missing (Debian/Ubuntu; sudo only
#      when not root): cmake, g++, make, Eigen 3.4, Catch2 2.x, Google Benchmark;
#   2. configures build/ (Release) unless it is configured already, and builds it;
#   3. runs the CPU quickstart example.
# CUDA is optional: when nvcc is found (PATH or /usr/local/cuda) the CUDA target, GPU tests and
# compile checks are built too.
#   bash scripts/setup.sh              everything above
#   bash scripts/setup.sh --deps-only  step 1 only (used by .ci/run)
# Environment: MEMATTN_JOBS (parallel build jobs, default: number of CPUs).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
JOBS="${MEMATTN_JOBS:-$(nproc 2>/dev/null || echo 2)}"
DEPS=(cmake g++ make libeigen3-dev catch2 libbenchmark-dev)

install_deps() {
  if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: not a Debian/Ubuntu system; install ${DEPS[*]} (or equivalents) yourself" >&2
    return 0
  fi
  local missing=() pkg
  for pkg in "${DEPS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$pkg")
    fi
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    echo "setup: dependencies present (${DEPS[*]})"
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
  echo "setup: installing ${missing[*]}"
  ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -q
  ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

install_deps
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
