#!/usr/bin/env bash
# Downloads the pure-Python/Triton peer of the linear-attention benchmark (spec §7.2) into .whl/
# (git-ignored) so it can travel to the GPU machine, which has PyTorch, Triton, einops and
# transformers but no network:
#   bash scripts/get-linear-peer-wheels.sh
#   bash scripts/build-gpu.sh
#   run(command="MEMATTN_CHECK_ONLY=linear bash scripts/device-check.sh", carry=["build-gpu/pack", ".whl"])
# device-check.sh installs .whl/*.whl into /tmp/memattn-site (no deps, no index) before
# benchmarks/gpu/linear_peer.py runs. Pinned: flash-linear-attention 0.5.2 and its fla-core.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VERSION="${FLA_VERSION:-0.5.2}"
mkdir -p .whl
for pkg in "flash-linear-attention==$VERSION" "fla-core==$VERSION"; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$pkg"
done
ls -la .whl
