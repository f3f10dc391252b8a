#!/usr/bin/env bash
# ThinK and composition quality sweep (issue 7): perplexity and real KV bytes through memattn-llama
# ppl, one JSON line per run (appended to $OUT, default think_sweep.jsonl). Same protocol as
# evict_sweep.sh, so the lines sit beside results/evict_*.jsonl on one bytes/quality plot:
#   MODEL=stories  (default) stories260K on TinyStories valid-100k, ctx 512 (head_dim 8: d_keep 5 at 0.4)
#   MODEL=smollm2  SmolLM2-135M on WikiText-2 test, ctx 2048, 4096 tokens (head_dim 64: d_keep 39 at 0.4)
# SPECS overrides the list of --kv specs. CHUNK default 64 (stories) / 16 (smollm2).
set -euo pipefail
BIN=${BIN:-build-h/bin/memattn-llama}
MODEL=${MODEL:-stories}
OUT=${OUT:-think_sweep.jsonl}
THREADS=${THREADS:-1}
if [ "$MODEL" = stories ]; then
  ARGS=(--model /work/shared/data/stories260K/stories260K.bin --text /work/shared/data/text/tinystories-valid-100k.txt --ctx 512)
  CHUNK=${CHUNK:-64}
  SPECS=${SPECS:-"full think:prune=0.25 think:prune=0.4 think:prune=0.5 kivi:kbits=4,vbits=2,residual=32
    think:prune=0.4+kivi:kbits=4,vbits=2 h2o:budget=64+think:prune=0.4 h2o:budget=64+kivi:kbits=4,vbits=2,residual=32
    h2o:budget=64+think:prune=0.4+kivi:kbits=4,vbits=2 h2o:budget=128+think:prune=0.4+kivi:kbits=4,vbits=2
    h2o:budget=128+think:prune=0.4+kivi:kbits=2,vbits=2"}
else
  ARGS=(--model "$HOME/.cache/memattn/models/SmolLM2-135M-Instruct.Q4_1.gguf" --text /work/shared/data/text/wikitext-2-raw-test.txt
        --raw-text --ctx 2048 --max-tokens 4096)
  CHUNK=${CHUNK:-16}
  SPECS=${SPECS:-"think:prune=0.4 think:prune=0.5 kivi:kbits=4,vbits=2 think:prune=0.4+kivi:kbits=4,vbits=2
    h2o:budget=512+think:prune=0.4+kivi:kbits=4,vbits=2 h2o:budget=256+think:prune=0.4+kivi:kbits=4,vbits=2
    h2o:budget=512+kivi:kbits=4,vbits=2"}
fi
for spec in $SPECS; do
  "$BIN" ppl "${ARGS[@]}" --chunk "$CHUNK" --threads "$THREADS" --kv "$spec" --json 2>/dev/null | tail -1 >> "$OUT"
done
