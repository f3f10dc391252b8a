#!/usr/bin/env bash
# Token-eviction quality sweep (issue 5): perplexity and real KV bytes per policy and budget through
# memattn-llama ppl, one JSON line per run (appended to $OUT, default evict_sweep.jsonl).
#   MODEL=stories  (default) stories260K on TinyStories valid-100k, ctx 512, budgets 32 64 128
#   MODEL=smollm2  SmolLM2-135M on WikiText-2 test, ctx 2048, 4096 tokens, budgets 256 512
# CHUNK (default 1): tokens per forward; eviction runs at every chunk end, so chunk 1 is the
# decode-time (streaming) protocol: the cache never holds more than budget + 1 tokens.
# Issue 6 adds lazy, sirllm, windowkv and pin (h2o + pinned sinks): POLICIES="lazy sirllm windowkv pin".
set -euo pipefail
BIN=${BIN:-build-evict/bin/memattn-llama}
MODEL=${MODEL:-stories}
CHUNK=${CHUNK:-1}
OUT=${OUT:-evict_sweep.jsonl}
THREADS=${THREADS:-1}
if [ "$MODEL" = stories ]; then
  ARGS=(--model /work/shared/data/stories260K/stories260K.bin --text /work/shared/data/text/tinystories-valid-100k.txt --ctx 512)
  BUDGETS=${BUDGETS:-"32 64 128"}
else
  ARGS=(--model "$HOME/.cache/memattn/models/SmolLM2-135M-Instruct.Q4_1.gguf" --text /work/shared/data/text/wikitext-2-raw-test.txt
        --raw-text --ctx 2048 --max-tokens 4096)
  BUDGETS=${BUDGETS:-"256 512"}
fi
POLICIES=${POLICIES:-"full streaming h2o scissorhands snapkv pyramidkv knorm"}  # also: d2o kvmerger (issue 6)
run() { "$BIN" ppl "${ARGS[@]}" --chunk "$CHUNK" --threads "$THREADS" --kv "$1" --json 2>/dev/null | tail -1 >> "$OUT"; }
for p in $POLICIES; do
  if [ "$p" = full ]; then run full; continue; fi
  for C in $BUDGETS; do
    q=$((C / 4)); w=$(( q < 32 ? q : 32 ))
    case $p in
      streaming)    run "streaming:sink=4,window=$((C - 4))" ;;
      h2o)          run "h2o:budget=$C" ;;
      scissorhands) run "scissorhands:budget=$C,history=$w,recent=$w,drop=$q" ;;
      snapkv)       run "snapkv:budget=$C,window=$w" ;;
      pyramidkv)    run "pyramidkv:budget=$C,window=$w" ;;
      knorm)        run "knorm:budget=$C"; run "knorm:budget=$C,sink=4,recent=$w" ;;
      d2o)          run "d2o:budget=$C" ;;
      kvmerger)     run "kvmerger:budget=$C" ;;
      # issue 6. lazy: peak = budget + window, so budget C - w keeps the peak at C tokens.
      lazy)         run "lazy:budget=$((C - w)),window=$w"; run "lazy:budget=$((C - w)),window=$w,alpha=0.01" ;;
      sirllm)       run "sirllm:budget=$C"; run "sirllm:budget=$C,recent=$w" ;;
      windowkv)     run "windowkv:budget=$C,window=$w" ;;
      pin)          run "h2o:budget=$C+pin:start=0,end=4" ;;  # H2O with 4 pinned sink tokens
    esac
  done
done
