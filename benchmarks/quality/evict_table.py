#!/usr/bin/env python3
"""Markdown table from evict_sweep.sh JSON lines: policy spec, perplexity, delta vs full, KV bytes peak
(and its ratio to the full fp16 cache's peak), speed. Usage: evict_table.py FILE.jsonl [...]"""
import json
import sys

rows, seen = [], set()
for path in sys.argv[1:]:
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        d = json.loads(line)
        key = (d["kv"], d["chunk"])
        if key in seen:
            continue
        seen.add(key)
        rows.append(d)
full = {d["chunk"]: d for d in rows if d["kv"].startswith("full")}
print("| --kv | chunk | perplexity | Δ vs full | KV bytes peak | vs full | tok/s |")
print("|---|---|---|---|---|---|---|")
for d in rows:
    f = full.get(d["chunk"]) or next(iter(full.values()), None)
    delta = d["ppl"] - f["ppl"] if f else float("nan")
    ratio = d["kv_bytes_peak"] / f["kv_bytes_peak"] if f else float("nan")
    print(f"| `{d['kv']}` | {d['chunk']} | {d['ppl']:.4f} | {delta:+.4f} | {d['kv_bytes_peak']:,} | {ratio:.3f} | {d['tokens_per_s']:.0f} |")
