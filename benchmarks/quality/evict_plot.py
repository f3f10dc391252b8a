#!/usr/bin/env python3
"""Perplexity vs real KV bytes, one line per KV policy (eviction, merging, pruning, quantization and
their '+' compositions), from the JSON lines of `memattn-llama ppl --json` (evict_sweep.sh and the
other sweeps in this folder). One panel (row) per (model, ctx, chunk); the full cache is the dashed line;
points above CLIP x the full-cache perplexity are drawn at the top edge (hollow).
Needs matplotlib (pip install -r benchmarks/quality/requirements.txt). The format follows OUT's
extension (.png, .svg, .pdf).
Usage: evict_plot.py OUT.png FILE.jsonl [...]"""
import json
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CLIP = 1.5


def policy_name(kv):
    """'h2o:budget=256+think:prune=0.4' -> 'h2o+think'; parameters that define a different method
    variant (not the budget) stay in the name."""
    parts = []
    for p in kv.split("+"):
        name, _, args = p.partition(":")
        if name == "knorm" and "sink=0" in args and "recent=0" in args:
            name = "knorm (no protection)"
        m = dict(re.findall(r"(\w+)=([\w./-]+)", args))
        if name == "kivi":
            name = f"kivi K{m.get('kbits', '?')}V{m.get('vbits', '?')}"
        elif name == "mikv":
            name = (f"mikv low={m.get('low', '2')}" + (" track" if m.get("track") == "1" else "") +
                    (" channel-K" if m.get("lowk") == "1" else ""))
        elif name == "kvmerger" and m.get("theta", "0.95") != "0.95":
            name = f"kvmerger θ={m['theta']}"
        elif name == "lazy" and (m.get("raw") == "1" or m.get("alpha", "0.0001") != "0.0001"):
            name = "lazy (raw score)" if m.get("raw") == "1" else f"lazy α={m['alpha']}"
        elif name == "compresskv" and m.get("maxf") == "1":
            name = "compresskv (uniform layers)"
        elif name == "compresskv" and m.get("heads", "4") != "4":
            name = f"compresskv ({m['heads']} heads)"
        elif name == "compresskv" and m.get("min", "32") != "32":
            name = f"compresskv min={m['min']}"
        elif name == "epicache" and "scores" in m:
            name = f"epicache layer scores p={m.get('power', '1.1')}"
        elif name == "epicache" and m.get("episodes", "4") != "1":
            name = f"epicache E={m.get('episodes', '4')}"
        elif name == "sirllm" and m.get("recent", "0") == "0":
            name = "sirllm (no recent)"
        elif name == "think":
            name = f"think λ={m.get('prune', '0.4')}" if len(kv.split("+")) == 1 else "think"
            if "vprune" in m:
                name += f" λv={m['vprune']}"
        parts.append(name)
    return "+".join(parts)


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, paths = sys.argv[1], sys.argv[2:]
    panels = {}
    for path in paths:
        for line in open(path):
            if not line.strip():
                continue
            d = json.loads(line)
            if "ppl" not in d:
                continue
            key = (d.get("model", "?").rsplit("/", 1)[-1], d.get("ctx"), d.get("chunk"))
            panel = panels.setdefault(key, {"full": None, "series": {}})
            name = policy_name(d["kv"])
            if name == "full":
                panel["full"] = d
            else:
                panel["series"].setdefault(name, {})[d["kv_bytes_peak"]] = d["ppl"]
    if not panels:
        sys.exit("no perplexity lines in " + ", ".join(paths))
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, 5.6 * len(panels)), squeeze=False)
    cmap = plt.get_cmap("tab20")
    names = sorted({n for p in panels.values() for n in p["series"]})
    style = {n: (cmap(i % 20), "osD^v<>ph*"[i % 10]) for i, n in enumerate(names)}
    for ax, ((model, ctx, chunk), panel) in zip(axes[:, 0], sorted(panels.items(), key=str)):
        full = panel["full"]
        top = CLIP * full["ppl"] if full else None
        for name, pts in sorted(panel["series"].items()):
            color, marker = style[name]
            bs = sorted(pts)
            ys = [min(pts[b], top) if top else pts[b] for b in bs]
            ax.plot(bs, ys, color=color, marker=marker, label=name, linewidth=1.6, markersize=5)
            for b in bs:
                if top and pts[b] > top:
                    ax.plot([b], [top], marker=marker, markerfacecolor="white", color=color, markersize=7)
        if full:
            ax.axhline(full["ppl"], color="gray", linestyle="--", linewidth=1)
            ax.plot([full["kv_bytes_peak"]], [full["ppl"]], "ko", label=f"full ({full['ppl']:.3f})")
        ax.set_xscale("log")
        ax.set_xlabel("KV bytes peak (real, log scale)")
        ax.set_ylabel("perplexity")
        ax.set_title(f"{model}, ctx {ctx}, chunk {chunk}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
