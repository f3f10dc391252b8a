#!/usr/bin/env python3
"""Peer for bench_dense_decode_cuda: PyTorch scaled_dot_product_attention on the same GQA decode
shapes (q [B, 32, 1, 128], k/v [B, 8, L, 128], bf16), one backend at a time.

Backends: flash and cuDNN (forced with torch.nn.attention.sdpa_kernel); if flash fails, also
efficient and math. Each is tried with enable_gqa=True first; if the backend rejects that, it is
retried on K/V expanded to 32 heads (repeat_interleave, done before timing and not counted) and
the JSON line says "gqa_expanded": true. Timing: CUDA events around each call, L2 flushed before
each call (as the memattn benchmark does), warm-up first, median of --iters. TB/s counts the
logical K+V bytes (B * 8 * L * 128 * 2 tensors * 2 bytes), the same bytes as the memattn line,
so the two are directly comparable (an expanded run physically reads 4x more).

One JSON line per (shape, backend) on stdout and in --json PATH; a backend that fails gives a
JSON line with "error" instead of stopping the run. Exit status: 0 if at least one backend ran,
77 without CUDA, 1 otherwise.
"""
import argparse
import json
import statistics
import sys
import traceback

SHAPES = [(1, 32768), (1, 131072), (8, 32768), (16, 65536)]
HQ, HKV, D = 32, 8, 128


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, 2 iterations")
    args = ap.parse_args()

    try:
        import torch
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"bench": "dense_decode", "impl": "torch_sdpa", "error": "import torch failed: %r" % (e,)}))
        return 1
    if not torch.cuda.is_available():
        print("no CUDA device: skipping")
        return 77

    out = open(args.json, "w") if args.json else None

    def emit(rec):
        line = json.dumps(rec, sort_keys=False)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    iters, warmup = (2, 1) if args.smoke else (args.iters, args.warmup)
    shapes = [(1, 1000), (2, 4096)] if args.smoke else SHAPES
    dev = torch.cuda.get_device_properties(0)
    l2 = getattr(dev, "L2_cache_size", 50 << 20)
    flush = torch.empty(max(4 * l2, 64 << 20), dtype=torch.uint8, device="cuda")
    backends = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION)]
    fallbacks = [("efficient", SDPBackend.EFFICIENT_ATTENTION), ("math", SDPBackend.MATH)]

    def timed(fn):
        for _ in range(warmup):
            fn()
        torch.cuda.synchronize()
        evs = []
        for i in range(iters):
            flush.fill_(i & 0xFF)
            s = torch.cuda.Event(enable_timing=True)
            e = torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            evs.append((s, e))
        torch.cuda.synchronize()
        us = [1000.0 * s.elapsed_time(e) for s, e in evs]
        return statistics.median(us), min(us)

    ran_any = False
    for B, L in shapes:
        g = torch.Generator(device="cuda")
        g.manual_seed(1234)
        q = torch.rand((B, HQ, 1, D), device="cuda", dtype=torch.bfloat16, generator=g) * 2 - 1
        k = torch.rand((B, HKV, L, D), device="cuda", dtype=torch.bfloat16, generator=g) * 2 - 1
        v = torch.rand((B, HKV, L, D), device="cuda", dtype=torch.bfloat16, generator=g) * 2 - 1
        kv_bytes = B * HKV * L * D * 2 * 2
        base = {
            "bench": "dense_decode",
            "impl": "torch_sdpa",
            "shape": {"B": B, "L": L, "Hq": HQ, "Hkv": HKV, "D": D, "Tq": 1},
            "dtype": "bf16",
            "device": dev.name,
            "sms": dev.multi_processor_count,
            "torch": torch.__version__,
        }
        flash_ok = False
        todo = list(backends)
        i = 0
        while i < len(todo):
            name, backend = todo[i]
            i += 1
            rec = dict(base, backend=name)
            errors = []
            result = None
            fn = o = None
            for expanded in (False, True):
                try:
                    if expanded:
                        kk = k.repeat_interleave(HQ // HKV, dim=1)
                        vv = v.repeat_interleave(HQ // HKV, dim=1)

                        def fn(kk=kk, vv=vv):
                            return F.scaled_dot_product_attention(q, kk, vv)
                    else:

                        def fn():
                            return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)

                    with sdpa_kernel([backend]):
                        o = fn()
                        torch.cuda.synchronize()
                        if not torch.isfinite(o.float()).all():
                            raise RuntimeError("non-finite output")
                        med, best = timed(fn)
                    result = (expanded, med, best)
                    break
                except Exception as e:  # noqa: BLE001
                    msg = str(e).strip()
                    msg = msg.splitlines()[0][:300] if msg else repr(e)
                    errors.append(("expanded: " if expanded else "enable_gqa: ") + msg)
                finally:
                    fn = o = None
                    if expanded:
                        kk = vv = None
                        torch.cuda.empty_cache()
            if result is None:
                rec["error"] = " | ".join(errors)
                emit(rec)
            else:
                expanded, med, best = result
                rec.update({"gqa_expanded": expanded, "us": round(med, 3), "us_min": round(best, 3),
                            "tbps": round(kv_bytes / (med * 1e-6) / 1e12, 4), "kv_bytes": kv_bytes,
                            "iters": iters})
                if errors:
                    rec["note"] = errors[0]
                emit(rec)
                ran_any = True
                if name == "flash":
                    flash_ok = True
            if name == "flash" and not flash_ok:
                todo.extend(fallbacks)
        del q, k, v
        torch.cuda.empty_cache()
    if out:
        out.close()
    return 0 if ran_any else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except Exception:  # noqa: BLE001
        traceback.print_exc()
        sys.exit(1)
