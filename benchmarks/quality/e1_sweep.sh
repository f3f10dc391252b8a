#!/usr/bin/env bash
# E1 prefix-compress-continue sweep (spec eviction.md §7.5, issue 5): every window is BOS + a prompt
# prefix, compressed once at its end (once=1: the prompt_end chunk), then a teacher-forced
# continuation appended without eviction; perplexity over the continuation only. One JSON line per
# run (memattn-llama ppl --prefix), appended to $OUT (default e1_sweep.jsonl).
#   MODEL=stories  (default) stories260K / TinyStories valid: 320 + 128 tokens, stride 128, C 32 64 128
#   MODEL=smollm2  SmolLM2-135M / WikiText-2 test: 1536 + 512 tokens, C 128 256 512
# WINDOWS (default 64 stories, 8 smollm2; the spec's SmolLM2 protocol has 32), CHUNK (prefill chunk,
# default 64), THREADS (default 1), POLICIES (default: full snapkv pyramidkv h2o streaming knorm).
set -euo pipefail
BIN=${BIN:-build/bin/memattn-llama}
MODEL=${MODEL:-stories}
CHUNK=${CHUNK:-64}
OUT=${OUT:-e1_sweep.jsonl}
THREADS=${THREADS:-1}
DATA=${MEMATTN_DATA_DIR:-$(cd "$(dirname "$0")/../../.." && pwd)/shared/data}
if [ "$MODEL" = stories ]; then
  ARGS=(--model "$DATA/stories260K/stories260K.bin" --text "$DATA/text/tinystories-valid-100k.txt"
        --ctx 449 --prefix 320 --stride 128 --windows "${WINDOWS:-64}")
  BUDGETS=${BUDGETS:-"32 64 128"}
else
  ARGS=(--model "$HOME/.cache/memattn/models/SmolLM2-135M-Instruct.Q4_1.gguf" --text "$DATA/text/wikitext-2-raw-test.txt"
        --raw-text --ctx 2048 --prefix 1536 --stride 2047 --windows "${WINDOWS:-8}")
  BUDGETS=${BUDGETS:-"128 256 512"}
fi
POLICIES=${POLICIES:-"full snapkv pyramidkv h2o streaming knorm"}
run() { "$BIN" ppl "${ARGS[@]}" --chunk "$CHUNK" --threads "$THREADS" --kv "$1" --json 2>/dev/null | tail -1 >> "$OUT"; }
for p in $POLICIES; do
  if [ "$p" = full ]; then run full; continue; fi
  for C in $BUDGETS; do
    w=$(( C / 4 < 32 ? C / 4 : 32 ))
    case $p in
      snapkv)    run "snapkv:budget=$C,window=$w,once=1" ;;
      pyramidkv) run "pyramidkv:budget=$C,window=$w,once=1" ;;
      h2o)       run "h2o:budget=$C,once=1" ;;
      streaming) run "streaming:sink=4,window=$((C - 4)),once=1" ;;
      knorm)     run "knorm:budget=$C,sink=4,recent=$w,once=1" ;;
    esac
  done
done
