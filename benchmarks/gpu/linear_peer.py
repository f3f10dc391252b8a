#!/usr/bin/env python3
"""Peers of bench_linear_cuda (spec §7.2) on the same GPU in the same job.

  fla    flash-linear-attention's chunk_lightning_attn(q, k, v, layer_idx=0, num_layers=24) on
         contiguous [1, T, 32, 128] bf16 tensors, default scale (1/sqrt(128)), no initial and no
         final state (the wheel is carried to the GPU machine in .whl/; pinned 0.5.2).
  flash  PyTorch SDPA, flash backend, is_causal=True, on [1, 32, T, 128] bf16.

CUDA events, >= 5 warm-ups (Triton autotuning happens there), median of --iters.
One JSON line per (T, impl) on stdout and in --json PATH, with the device, SM count, driver and
the torch / triton / fla versions. Exits 77 without a CUDA device.
"""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json", default="")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        print(json.dumps({"bench": "linear_peer", "error": "import torch failed: %r" % (e,)}))
        return 1
    if not torch.cuda.is_available():
        print("no CUDA device: skipping")
        return 77
    out = open(args.json, "w") if args.json else None

    def emit(rec):
        line = json.dumps(rec)
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    dev = torch.cuda.get_device_properties(0)
    versions = {"torch": torch.__version__}
    try:
        import triton
        versions["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        versions["triton"] = None
    fla_fn = None
    try:
        import fla
        from fla.ops.lightning_attn import chunk_lightning_attn as fla_fn
        versions["fla"] = getattr(fla, "__version__", "?")
    except Exception as e:  # noqa: BLE001
        versions["fla"] = None
        emit({"bench": "linear_peer", "impl": "fla", "error": "import fla failed: %r" % (e,)})
    try:
        import subprocess
        versions["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True).stdout.strip()
    except Exception:  # noqa: BLE001
        versions["driver"] = None

    def median_us(fn):
        for _ in range(args.warmup):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(args.iters):
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) * 1e3)
        times.sort()
        return times[len(times) // 2]

    H, D = 32, 128
    Ts = [2048] if args.smoke else [2048, 4096, 8192, 16384, 32768, 65536]
    for T in Ts:
        g = torch.Generator(device="cuda")
        g.manual_seed(T)
        q = torch.randn((1, T, H, D), device="cuda", dtype=torch.bfloat16, generator=g)
        k = torch.randn((1, T, H, D), device="cuda", dtype=torch.bfloat16, generator=g)
        v = torch.randn((1, T, H, D), device="cuda", dtype=torch.bfloat16, generator=g)
        base = {"bench": "prefill", "device": dev.name, "sm_count": dev.multi_processor_count, "B": 1, "T": T,
                "H": H, "D": D, "versions": versions}
        if fla_fn is not None:
            try:
                us = median_us(lambda: fla_fn(q, k, v, layer_idx=0, num_layers=24))
                emit(dict(base, impl="fla_chunk_lightning_attn", us=us, tokens_per_s=T / (us * 1e-6)))
            except Exception as e:  # noqa: BLE001
                emit(dict(base, impl="fla_chunk_lightning_attn", error=repr(e)))
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            qh, kh, vh = (x.transpose(1, 2).contiguous() for x in (q, k, v))
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                us = median_us(lambda: torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, is_causal=True))
            emit(dict(base, impl="sdpa_flash", us=us, tokens_per_s=T / (us * 1e-6)))
            del qh, kh, vh
        except Exception as e:  # noqa: BLE001
            emit(dict(base, impl="sdpa_flash", error=repr(e)))
        del q, k, v
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
