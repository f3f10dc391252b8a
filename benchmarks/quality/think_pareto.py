#!/usr/bin/env python3
"""Perplexity vs real KV bytes of every run in the given jsonl files (memattn-llama ppl --json lines,
e.g. results/evict_*.jsonl and results/think_*.jsonl), grouped by model, with the Pareto front
(no other run has both fewer peak bytes and lower perplexity) marked '*'.

    python3 benchmarks/quality/think_pareto.py benchmarks/quality/results/{evict,think}_smollm2*.jsonl
"""
import json
import sys


def main(paths):
    runs = []
    for path in paths:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    r = json.loads(line)
                    r["file"] = path.rsplit("/", 1)[-1]
                    runs.append(r)
    for model in sorted({r["model"] for r in runs}):
        rs = sorted((r for r in runs if r["model"] == model), key=lambda r: (r["kv_bytes_peak"], r["ppl"]))
        print(f"## {model}")
        print(f"{'':1} {'ppl':>9} {'bytes_peak':>11} {'of full':>8}  kv (chunk, file)")
        best = float("inf")
        for r in rs:
            front = r["ppl"] < best
            best = min(best, r["ppl"])
            share = r["kv_bytes_peak"] / r["kv_bytes_full"]
            print(f"{'*' if front else ' '} {r['ppl']:9.4f} {r['kv_bytes_peak']:11d} {share:8.3f}  {r['kv']} ({r['chunk']}, {r['file']})")
        print()


if __name__ == "__main__":
    main(sys.argv[1:])
