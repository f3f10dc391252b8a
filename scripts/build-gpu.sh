#!/usr/bin/env bash
# Builds build-gpu/ HERE (no GPU needed) for the lent GPU machine, which has CUDA, CMake and
# PyTorch but no Debian packages (no Eigen, no Catch2) and no network:
#   * Release, real SASS for sm_90 only (H100/H200; override with MEMATTN_GPU_ARCH=80-real etc.),
#     static cudart (memattn::cuda links CUDA::cudart_static), static libstdc++/libgcc so the
#     binaries don't depend on this machine's C++ runtime;
#   * only the GPU targets: the executables of every ctest test labelled `gpu` (GPU tests, the
#     CUDA quickstart, the GPU benchmark smoke) plus the GPU benchmark;
#   * writes build-gpu/bin/gpu-tests.tsv: one line per gpu test, "name<TAB>command<TAB>args..."
#     with paths relative to the repository root (ctest's own files hold this machine's absolute
#     paths, so scripts/device-check.sh runs the binaries from this list instead of ctest).
# Then, on the device:  run(command="bash scripts/device-check.sh", carry=["build-gpu/pack"])
# (build-gpu/pack/bin.tar.gz, build-gpu/bin gzip'd, is what device-check.sh needs).
# Environment: MEMATTN_JOBS (default 2), MEMATTN_GPU_ARCH (default 90-real).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
JOBS="${MEMATTN_JOBS:-2}"
ARCH="${MEMATTN_GPU_ARCH:-90-real}"
BUILD=build-gpu

cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_CUDA_ARCHITECTURES="$ARCH" \
  -DMEMATTN_ENABLE_CUDA=ON -DMEMATTN_BUILD_TESTS=ON -DMEMATTN_BUILD_BENCHMARKS=ON -DMEMATTN_BUILD_EXAMPLES=ON \
  -DMEMATTN_INSTALL=OFF \
  -DCMAKE_EXE_LINKER_FLAGS="-static-libstdc++ -static-libgcc" >/dev/null

if ! grep -q '^CMAKE_CUDA_COMPILER:[A-Z]*=/' "$BUILD/CMakeCache.txt"; then
  echo "build-gpu: nvcc not found; nothing to build" >&2
  exit 1
fi

# The gpu-labelled tests and the executables they run, read from ctest's generated files
# (ctest itself cannot name the command of an executable that is not built yet).
mapfile -t TARGETS < <(python3 - "$ROOT" "$BUILD" <<'PY'
import os, re, sys
root, build = sys.argv[1], sys.argv[2]
bin_dir = os.path.join(root, build, "bin") + os.sep
quoted = re.compile(r'"((?:[^"\\]|\\.)*)"')
tests, labels = {}, {}
for dirpath, _dirs, files in os.walk(os.path.join(root, build)):
    if "CTestTestfile.cmake" not in files:
        continue
    for line in open(os.path.join(dirpath, "CTestTestfile.cmake")):
        line = line.strip()
        m = re.match(r'add_test\(\[=\[(.*?)\]=\]\s+(.*)\)$', line)
        if m:
            tests[m.group(1)] = quoted.findall(m.group(2))
            continue
        m = re.match(r'set_tests_properties\(\[=\[(.*?)\]=\]\s+PROPERTIES\s+(.*)\)$', line)
        if m:
            lm = re.search(r'LABELS\s+"([^"]*)"', m.group(2))
            if lm:
                labels[m.group(1)] = lm.group(1).split(";")

def rel(p):
    return os.path.relpath(p, root) if p.startswith(root + os.sep) else p

targets, lines = set(), []
for name in sorted(tests):
    cmd = tests[name]
    if "gpu" not in labels.get(name, []) or not cmd:
        continue
    if cmd[0].startswith(bin_dir):
        targets.add(os.path.basename(cmd[0]))
    lines.append("\t".join([name] + [rel(c) for c in cmd]))
os.makedirs(os.path.join(root, build, "bin"), exist_ok=True)
with open(os.path.join(root, build, "bin", "gpu-tests.tsv"), "w") as f:
    f.write("".join(l + "\n" for l in lines))
for t in sorted(targets):
    print(t)
PY
)
TARGETS+=(bench_dense_decode_cuda)
TARGETS+=(bench_linear_cuda)  # issue 8
TARGETS+=(bench_memory_cuda)  # issue 9
TARGETS+=(bench_think_decode_cuda_ctas3)  # issue 7: path 3's occupancy A/B (device-check step mma_ctas3)
echo "build-gpu: building ${TARGETS[*]} for CUDA arch $ARCH"
cmake --build "$BUILD" -j "$JOBS" --target "${TARGETS[@]}"
# Host symbols are of no use on the device and push build-gpu/bin past the 64 MiB carry limit
# (77 MiB unstripped, 61 MiB stripped on 2026-11-27).
for f in "$BUILD"/bin/*; do
  if [ -f "$f" ] && [ -x "$f" ]; then strip "$f" 2>/dev/null || true; fi
done
# Stripped, the binaries still reached 62.5 MiB on 2026-11-28, next to the 64 MiB carry limit of
# working tree + carried paths: carry build-gpu/pack (one gzip'd tar, ~21 MiB) instead;
# device-check.sh unpacks it when build-gpu/bin is absent.
mkdir -p "$BUILD/pack"
tar -C "$BUILD" -cf - bin | gzip -6 >"$BUILD/pack/bin.tar.gz"
echo "build-gpu: tests for the device ($BUILD/bin/gpu-tests.tsv):"
cat "$BUILD/bin/gpu-tests.tsv"
du -sh "$BUILD/bin" "$BUILD/pack" "$BUILD"
