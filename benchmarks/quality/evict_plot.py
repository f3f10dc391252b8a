#!/usr/bin/env python3
"""Perplexity vs real KV bytes, one line per eviction policy, from evict_sweep.sh JSON lines.
Writes an SVG (no plotting library needed; matplotlib is not installed on the build machine);
points above 1.25x the full-cache perplexity are clipped to the top edge.
Usage: evict_plot.py OUT.svg FILE.jsonl [...]"""
import json
import sys

out, paths = sys.argv[1], sys.argv[2:]
series, full = {}, None
for path in paths:
    for line in open(path):
        if not line.strip():
            continue
        d = json.loads(line)
        name = d["kv"].split(":")[0]
        if name == "full":
            full = d
            continue
        if name == "knorm" and "sink=0,recent=0" in d["kv"]:
            name = "knorm (no protection)"
        pts = series.setdefault(name, {})
        pts[d["kv_bytes_peak"]] = d["ppl"]
W, H, L, R, T, B = 720, 440, 70, 190, 20, 50
xs = [b for s in series.values() for b in s] + ([full["kv_bytes_peak"]] if full else [])
ys = [p for s in series.values() for p in s.values() if not full or p < 1.25 * full["ppl"]] + ([full["ppl"]] if full else [])
x0, x1, y0, y1 = min(xs) * 0.9, max(xs) * 1.05, min(ys) * 0.98, max(ys) * 1.02
X = lambda b: L + (b - x0) / (x1 - x0) * (W - L - R)
Y = lambda p: T + (1 - (min(p, y1) - y0) / (y1 - y0)) * (H - T - B)
colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/><line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
       f'<text x="{(L+W-R)/2}" y="{H-12}" text-anchor="middle">KV bytes peak (real)</text>',
       f'<text x="16" y="{(T+H-B)/2}" transform="rotate(-90 16 {(T+H-B)/2})" text-anchor="middle">perplexity</text>']
for i in range(5):
    b = x0 + (x1 - x0) * i / 4
    p = y0 + (y1 - y0) * i / 4
    svg.append(f'<text x="{X(b)}" y="{H-B+16}" text-anchor="middle">{b/1e3:.0f}K</text>')
    svg.append(f'<text x="{L-6}" y="{Y(p)+4}" text-anchor="end">{p:.2f}</text>')
if full:
    svg.append(f'<line x1="{L}" y1="{Y(full["ppl"])}" x2="{W-R}" y2="{Y(full["ppl"])}" stroke="gray" stroke-dasharray="4"/>')
    svg.append(f'<circle cx="{X(full["kv_bytes_peak"])}" cy="{Y(full["ppl"])}" r="4" fill="black"/>')
    svg.append(f'<text x="{W-R+10}" y="{T+12}">full (dashed)</text>')
for i, (name, pts) in enumerate(sorted(series.items())):
    c = colors[i % len(colors)]
    pl = " ".join(f"{X(b):.1f},{Y(p):.1f}" for b, p in sorted(pts.items()))
    svg.append(f'<polyline points="{pl}" fill="none" stroke="{c}" stroke-width="2"/>')
    for b, p in pts.items():
        svg.append(f'<circle cx="{X(b):.1f}" cy="{Y(p):.1f}" r="3" fill="{c}"/>')
    svg.append(f'<text x="{W-R+10}" y="{T+30+16*i}" fill="{c}">{name}</text>')
svg.append("</svg>")
open(out, "w").write("\n".join(svg))
