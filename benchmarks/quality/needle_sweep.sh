#!/usr/bin/env bash
# Needle in real text (spec eviction.md §7.5 E5) for every eviction policy at one budget:
# SmolLM2-135M, a WikiText-2 haystack of HAYSTACK tokens (default 3500), the needle at DEPTHS,
# CODES codes per depth, the prompt streamed in chunks of CHUNK (default 16) so decode-time
# policies evict as they go; BUDGET tokens per (layer, KV head) (default 875 = 25% of 3500).
# One JSON line per case plus a summary line per policy, appended to $OUT.
set -euo pipefail
BIN=${BIN:-build/bin/memattn-llama}
OUT=${OUT:-needle_sweep.jsonl}
HAYSTACK=${HAYSTACK:-3500}
BUDGET=${BUDGET:-875}
DEPTHS=${DEPTHS:-0.1,0.3,0.5,0.7,0.9}
CODES=${CODES:-1}
CHUNK=${CHUNK:-16}
THREADS=${THREADS:-1}
MODEL=${MODEL:-$HOME/.cache/memattn/models/SmolLM2-135M-Instruct.Q4_1.gguf}
TEXT=${TEXT:-${MEMATTN_DATA_DIR:-../shared/data}/text/wikitext-2-raw-test.txt}
C=$BUDGET; w=32; q=$((C / 4))
POLICIES=${POLICIES:-"full streaming:sink=4,window=$((C - 4)) h2o:budget=$C scissorhands:budget=$C,history=$w,recent=$w,drop=$q
  snapkv:budget=$C,window=$w pyramidkv:budget=$C,window=$w knorm:budget=$C,sink=4,recent=$w"}
for kv in $POLICIES; do
  "$BIN" needle --model "$MODEL" --text "$TEXT" --raw-text --haystack "$HAYSTACK" --depths "$DEPTHS" --codes "$CODES" \
    --chunk "$CHUNK" --threads "$THREADS" --kv "$kv" --json >> "$OUT"
done
