#!/usr/bin/env bash
# The test command (README; .ci/run runs exactly this), safe to re-run:
#   1. build/ (Release; configured here if it is not yet): build, then every ctest test
#      (CPU, headers, install, examples, benchmark smoke; GPU tests skip without a device);
#   2. build-asan/ (ASan + UBSan with Clang when present; CUDA, benchmarks and header checks off):
#      build, then the CPU tests (label cpu) with UBSan errors fatal.
# Environment: MEMATTN_JOBS (parallel jobs, default: number of CPUs).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
JOBS="${MEMATTN_JOBS:-$(nproc 2>/dev/null || echo 2)}"
SECONDS=0

echo "== build/ (Release)"
if [ ! -f build/CMakeCache.txt ]; then
  EXTRA=()
  # No GPU here: the GPU tests and benchmarks only need to compile: PTX of one architecture,
  # device code unoptimised (cmake/memattn_cuda_tests.cmake; tests/compile still checks sm_80 and
  # sm_90 SASS of every kernel).
  if ! nvidia-smi -L >/dev/null 2>&1; then EXTRA+=(-DMEMATTN_CUDA_TEST_ARCHITECTURES=90-virtual); fi
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "${EXTRA[@]}"
fi
cmake --build build -j "$JOBS"
ctest --test-dir build --output-on-failure -j "$JOBS"
echo "== build/ done after ${SECONDS}s"

echo "== build-asan/ (AddressSanitizer + UndefinedBehaviorSanitizer, CPU only)"
# Clang when it can link a sanitized program (a second compiler's warnings, and its ASan+UBSan
# builds compile ~2.4x faster than GCC's), else the default compiler.
SAN="-fsanitize=address,undefined -fno-omit-frame-pointer"
SAN_CXX=()
probe="$(mktemp -d)"
if command -v clang++ >/dev/null 2>&1 &&
   echo 'int main() { return 0; }' | clang++ -x c++ $SAN - -o "$probe/a.out" >/dev/null 2>&1 && "$probe/a.out"; then
  SAN_CXX=(-DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang)
fi
rm -rf "$probe"
# A build-asan/ configured with another compiler is configured afresh.
if [ -f build-asan/CMakeCache.txt ]; then
  want=default; have=default
  [ "${#SAN_CXX[@]}" -gt 0 ] && want=clang
  grep -q '^CMAKE_CXX_COMPILER:.*clang' build-asan/CMakeCache.txt && have=clang
  [ "$want" = "$have" ] || rm -rf build-asan
fi
# Debug keeps Eigen's and the library's assertions; -O1 keeps the run time reasonable; -g1 (line
# tables only) keeps symbolized stack traces at a third less compile time than -g. The header
# self-containment checks already ran in build/, so they are not rebuilt here. A portable
# memattn-llama (MEMATTN_LLAMA_NATIVE=OFF) lets the tests share its KV factory (tests/CMakeLists.txt).
cmake -S . -B build-asan ${SAN_CXX[@]+"${SAN_CXX[@]}"} -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" \
  -DCMAKE_CXX_FLAGS="$SAN" -DCMAKE_EXE_LINKER_FLAGS="$SAN" \
  -DMEMATTN_ENABLE_CUDA=OFF -DMEMATTN_BUILD_BENCHMARKS=OFF -DMEMATTN_BUILD_HEADER_CHECKS=OFF \
  -DMEMATTN_LLAMA_NATIVE=OFF >/dev/null
cmake --build build-asan -j "$JOBS"
UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=abort_on_error=0:strict_string_checks=1 \
  ctest --test-dir build-asan -L cpu --output-on-failure -j "$JOBS"
echo "== all tests passed (${SECONDS}s)"
