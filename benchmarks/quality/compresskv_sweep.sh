#!/usr/bin/env bash
# CompressKV quality sweep (issue 6), the protocol of evict_sweep.sh: perplexity and real KV bytes
# through memattn-llama ppl, one JSON line per run (appended to $OUT).
#   MODEL=stories  (default) stories260K on TinyStories valid-100k, ctx 512, budgets 32 64 128
#   MODEL=smollm2  SmolLM2-135M on WikiText-2 test, ctx 2048, 4096 tokens, budgets 256 512
# The head/error tables come from `memattn-llama retrieval-heads` (tables/README.md has the
# commands). VARIANTS: default = spec defaults (w 8, k 5 avg, 4 heads, min 32, max 3C);
# allheads = every query head scores (isolates the head selection); min8 = smallest layer budget 8
# (lets the error table move budgets at C = 32 on stories260K); uniform = maxf=1 (every layer gets
# exactly C: isolates the error-aware budgets); snapkv_matched = SnapKV with CompressKV's scoring
# settings (w 8, k 5, avg), per KV head, uniform budgets.
set -euo pipefail
BIN=${BIN:-build-h/bin/memattn-llama}
MODEL=${MODEL:-stories}
CHUNK=${CHUNK:-1}
OUT=${OUT:-compresskv_sweep.jsonl}
THREADS=${THREADS:-1}
T=benchmarks/quality/tables  # run from the repository root (BIN and the tables are relative to it)
if [ "$MODEL" = stories ]; then
  ARGS=(--model /work/shared/data/stories260K/stories260K.bin --text /work/shared/data/text/tinystories-valid-100k.txt --ctx 512)
  BUDGETS=${BUDGETS:-"32 64 128"}
  TABLE=${TABLE:-$T/compresskv_stories260k.table}
  ALL=8
else
  ARGS=(--model "$HOME/.cache/memattn/models/SmolLM2-135M-Instruct.Q4_1.gguf" --text /work/shared/data/text/wikitext-2-raw-test.txt
        --raw-text --ctx 2048 --max-tokens 4096)
  BUDGETS=${BUDGETS:-"256 512"}
  TABLE=${TABLE:-$T/compresskv_smollm2_135m.table}
  ALL=9
fi
VARIANTS=${VARIANTS:-"default allheads"}
run() { "$BIN" ppl "${ARGS[@]}" --chunk "$CHUNK" --threads "$THREADS" --kv "$1" --json 2>/dev/null | tail -1 >> "$OUT"; }
for v in $VARIANTS; do
  for C in $BUDGETS; do
    case $v in
      default)  run "compresskv:budget=$C,table=$TABLE" ;;
      allheads) run "compresskv:budget=$C,table=$TABLE,heads=$ALL" ;;
      min8)     run "compresskv:budget=$C,table=$TABLE,min=8" ;;
      uniform)  run "compresskv:budget=$C,table=$TABLE,maxf=1" ;;
      snapkv_matched) run "snapkv:budget=$C,window=8,kernel=5,pool=0" ;;
    esac
  done
done
