#!/usr/bin/env bash
# EpiCache and SentenceKV quality sweep (issue 6): perplexity and real KV bytes through
# memattn-llama ppl, one JSON line per run (appended to $OUT), same protocol as evict_sweep.sh:
#   MODEL=stories  (default) stories260K on TinyStories valid-100k, ctx 512, budgets 32 64 128
#   MODEL=smollm2  SmolLM2-135M on WikiText-2 test, ctx 2048, 4096 tokens, budgets 256 512
# CHUNK: tokens per forward (stories: 1 = the streaming protocol of evict_stories260k_chunk1.jsonl;
# SmolLM2: 16 as evict_smollm2_chunk16.jsonl). kv_bytes_peak = device bytes (EpiCache: every
# episode cache, block included = the peak prefill memory); kv_host_bytes_peak = SentenceKV's host
# pool.
set -euo pipefail
BIN=${BIN:-build-h/bin/memattn-llama}
MODEL=${MODEL:-stories}
CHUNK=${CHUNK:-1}
OUT=${OUT:-evict6c_sweep.jsonl}
THREADS=${THREADS:-1}
if [ "$MODEL" = stories ]; then
  ARGS=(--model /work/shared/data/stories260K/stories260K.bin --text /work/shared/data/text/tinystories-valid-100k.txt --ctx 512)
  BUDGETS=${BUDGETS:-"32 64 128"}
else
  ARGS=(--model "$HOME/.cache/memattn/models/SmolLM2-135M-Instruct.Q4_1.gguf" --text /work/shared/data/text/wikitext-2-raw-test.txt
        --raw-text --ctx 2048 --max-tokens 4096)
  BUDGETS=${BUDGETS:-"256 512"}
fi
POLICIES=${POLICIES:-"epicache sentencekv"}
run() { "$BIN" ppl "${ARGS[@]}" --chunk "$CHUNK" --threads "$THREADS" --kv "$1" --json 2>/dev/null | tail -1 >> "$OUT"; }
for p in $POLICIES; do
  for C in $BUDGETS; do
    q=$((C / 4)); w=$(( q < 32 ? q : 32 ))
    case $p in
      epicache)   run "epicache:budget=$C,block=16,recent=$w${EPI_EXTRA:-}" ;;
      sentencekv) run "sentencekv:budget=$C" ;;
    esac
  done
done
