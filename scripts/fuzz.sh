#!/usr/bin/env bash
# Builds a libFuzzer target and runs it for a bounded time.
#
#   bash scripts/fuzz.sh [TARGET] [SECONDS] [-- LIBFUZZER_ARGS...]
#   bash scripts/fuzz.sh gguf 60          # tests/llama/fuzz_gguf.cpp for 60 s (the defaults)
#   bash scripts/fuzz.sh tokenizer 120
#   bash scripts/fuzz.sh gguf 0           # only replay the seeds and the saved corpus
#   bash scripts/fuzz.sh gguf 0 -- build-fuzz/gguf/crash-<sha>   # reproduce one input
#
# TARGET names tests/llama/fuzz_TARGET.cpp (a file defining LLVMFuzzerTestOneInput). Optional
# companions, used when present:
#   tests/llama/fuzz_TARGET_seeds.cpp  a program that writes seed inputs into the folder given
#                                      as its argument (built without the fuzzer, with ASan);
#   tests/llama/fuzz_TARGET.dict       a libFuzzer dictionary.
# Everything goes under build-fuzz/TARGET/: the binary, seeds/, corpus/ (kept between runs, so
# later runs start from what earlier ones found), crash-*/leak-*/timeout-* artifacts and
# last-run.log (the full libFuzzer output; its last lines are shown).
# Exit status: 0 when the run ends without a finding, 1 when libFuzzer reports one (the
# artifact path is printed), 2 for usage or toolchain problems.
#
# Flags: clang++ -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all; include
# paths examples/llama, tests and include. Needs clang (Debian: apt-get install -y clang).
# Environment: CXX_FUZZ (default clang++), FUZZ_JOBS (libFuzzer -jobs/-workers, default 1),
# FUZZ_MAX_LEN (default 16384), FUZZ_RSS_MB (default 2048).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"

target="gguf"
seconds=60
extra=()
if [ $# -gt 0 ] && [ "$1" != "--" ]; then target="$1"; shift; fi
if [ $# -gt 0 ] && [ "$1" != "--" ]; then seconds="$1"; shift; fi
if [ $# -gt 0 ] && [ "$1" = "--" ]; then shift; extra=("$@"); fi
case "$target" in -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;; esac
if ! [[ "$target" =~ ^[A-Za-z0-9_]+$ ]]; then echo "fuzz: bad target name '$target'" >&2; exit 2; fi
if ! [[ "$seconds" =~ ^[0-9]+$ ]]; then echo "fuzz: SECONDS must be a whole number, got '$seconds'" >&2; exit 2; fi

src="tests/llama/fuzz_${target}.cpp"
if [ ! -f "$src" ]; then
  echo "fuzz: no $src; targets here:" $(ls tests/llama/fuzz_*.cpp 2>/dev/null | sed -n 's|.*/fuzz_\([A-Za-z0-9]*\)\.cpp$|\1|p') >&2
  exit 2
fi
CXX_FUZZ="${CXX_FUZZ:-clang++}"
if ! command -v "$CXX_FUZZ" >/dev/null 2>&1; then
  echo "fuzz: $CXX_FUZZ not found (Debian/Ubuntu: apt-get install -y clang)" >&2
  exit 2
fi

out="build-fuzz/$target"
mkdir -p "$out/seeds" "$out/corpus"
INCLUDES=(-I "$ROOT/examples/llama" -I "$ROOT/tests" -I "$ROOT/include")
COMMON=(-std=c++17 -g -O1 -fno-omit-frame-pointer)
if [ -d /usr/include/eigen3 ]; then INCLUDES+=(-isystem /usr/include/eigen3); fi

echo "fuzz: building $out/fuzz_$target from $src" >&2
"$CXX_FUZZ" "${COMMON[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  "${INCLUDES[@]}" "$src" -o "$out/fuzz_$target"

seeds_src="tests/llama/fuzz_${target}_seeds.cpp"
if [ -f "$seeds_src" ]; then
  "$CXX_FUZZ" "${COMMON[@]}" -fsanitize=address,undefined "${INCLUDES[@]}" "$seeds_src" -o "$out/seeds_$target"
  "$out/seeds_$target" "$out/seeds"
  echo "fuzz: $(ls "$out/seeds" | wc -l) seed inputs in $out/seeds" >&2
fi

# 0 seconds: run the seeds and the corpus once (libFuzzer reads -max_total_time=0 as "forever").
if [ "$seconds" -eq 0 ]; then limit=(-runs=0); else limit=(-max_total_time="$seconds"); fi
args=("${limit[@]}" -max_len="${FUZZ_MAX_LEN:-16384}" -rss_limit_mb="${FUZZ_RSS_MB:-2048}"
      -timeout=10 -print_final_stats=1 -artifact_prefix="$out/")
jobs="${FUZZ_JOBS:-1}"
if [ "$jobs" -gt 1 ]; then args+=(-jobs="$jobs" -workers="$jobs"); fi
if [ -f "tests/llama/fuzz_${target}.dict" ]; then args+=(-dict="tests/llama/fuzz_${target}.dict"); fi

export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"

if [ ${#extra[@]} -gt 0 ] && [ -f "${extra[0]}" ]; then
  # Reproduce given inputs: no corpus, no time limit.
  echo "fuzz: running $out/fuzz_$target on ${extra[*]}" >&2
  exec "$out/fuzz_$target" "${extra[@]}"
fi

echo "fuzz: fuzzing $target for ${seconds}s (corpus $out/corpus)" >&2
set +e
"$out/fuzz_$target" "${args[@]}" "${extra[@]}" "$out/corpus" "$out/seeds" >"$out/last-run.log" 2>&1
rc=$?
set -e
tail -n 30 "$out/last-run.log" >&2
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/last-run.log" | tail -1)
if [ "$rc" -ne 0 ]; then
  echo "fuzz: $target FAILED (libFuzzer exit $rc) after ${execs:-?} executions; artifacts:" >&2
  ls -1 "$out"/crash-* "$out"/leak-* "$out"/timeout-* "$out"/oom-* 2>/dev/null >&2 || true
  exit 1
fi
echo "fuzz: $target OK: ${execs:-?} executions in ${seconds}s, corpus $(ls "$out/corpus" | wc -l) inputs" >&2
