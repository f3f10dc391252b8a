#!/usr/bin/env bash
# MiKV vs plain H2O eviction at equal real bytes (issue 7 part 2): perplexity and real KV bytes through
# memattn-llama ppl, one JSON line per run (appended to $OUT, default mikv_sweep.jsonl).
#   MODEL=stories  (default) stories260K on TinyStories valid-100k, ctx 512, budgets 32 64 128, D = 8
#   MODEL=smollm2  SmolLM2-135M on WikiText-2 test, ctx 2048, 4096 tokens, budgets 256 512, D = 64
# For each H2O budget C the byte budget per (layer, KV head) is H2O's steady state, C tokens of
# fp16 K+V + position + score = C*(4*D + 8) bytes; MiKV gets the same bytes with C/2 (and C/4)
# High tokens and solves its Low budget from them (mikv:...,bytes=). kv_bytes_peak in the output is
# the measured peak of both (it includes one chunk of not-yet-compacted tokens for both).
set -euo pipefail
BIN=${BIN:-build-h/bin/memattn-llama}
MODEL=${MODEL:-stories}
CHUNK=${CHUNK:-64}
OUT=${OUT:-mikv_sweep.jsonl}
THREADS=${THREADS:-1}
if [ "$MODEL" = stories ]; then
  ARGS=(--model /work/shared/data/stories260K/stories260K.bin --text /work/shared/data/text/tinystories-valid-100k.txt --ctx 512)
  BUDGETS=${BUDGETS:-"32 64 128"}; D=8
else
  ARGS=(--model "$HOME/.cache/memattn/models/SmolLM2-135M-Instruct.Q4_1.gguf" --text /work/shared/data/text/wikitext-2-raw-test.txt
        --raw-text --ctx 2048 --max-tokens 4096)
  BUDGETS=${BUDGETS:-"256 512"}; D=64
fi
# Extra MiKV options per run (space-separated list of ",key=value" suffixes; "" = defaults).
VARIANTS=${VARIANTS:-"low=2 low=4"}
run() { "$BIN" ppl "${ARGS[@]}" --chunk "$CHUNK" --threads "$THREADS" --kv "$1" --json 2>/dev/null | tail -1 >> "$OUT"; }
for C in $BUDGETS; do
  bytes=$((C * (4 * D + 8)))
  [ "${SKIP_H2O:-0}" = 1 ] || run "h2o:budget=$C"
  for hi in $((C / 2)) ${EXTRA_HIGH:-}; do
    for var in $VARIANTS; do run "mikv:budget=$hi,bytes=$bytes,$var"; done
  done
done
