#!/usr/bin/env python3
"""SmolLM2's logits from memattn-llama against the independent numpy reference.

Runs `memattn-llama logits` on the first 64 tokens of WikiText-2 (raw text), then
reference_forward.py's Model (gguf package reader + dequantizer, float64) on the same token ids,
and requires max |engine - reference| <= 1e-3 x (the reference's logit range).
Exit 77 (skipped) when the model or the Python packages are absent.

usage: check_smollm2_logits.py CLI MODEL.gguf WIKITEXT [--tokens N] [--kv SPEC]
"""
import os
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def skip(why):
    print("SKIP:", why)
    sys.exit(77)


def main():
    if len(sys.argv) < 4:
        print(__doc__)
        return 2
    cli, model, text = sys.argv[1:4]
    n = int(sys.argv[sys.argv.index("--tokens") + 1]) if "--tokens" in sys.argv else 64
    kv = sys.argv[sys.argv.index("--kv") + 1] if "--kv" in sys.argv else "full"
    if not os.path.exists(model):
        skip(f"{model} not found (bash scripts/get-models.sh)")
    try:
        import numpy as np  # noqa: F401
        import gguf  # noqa: F401
    except ImportError as e:
        skip(f"python package missing: {e} (pip install -r tests/llama/requirements.txt)")
    import numpy as np
    sys.path.insert(0, HERE)
    import reference_forward as ref

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "logits.bin")
        subprocess.run([cli, "logits", "--model", model, "--text", text, "--raw-text", "--max-tokens", str(n),
                        "--kv", kv, "--out", out], check=True)
        data = open(out, "rb").read()
    if data[:8] != b"MALOGITS":
        print("bad logits file header")
        return 1
    version, tokens, vocab = struct.unpack_from("<3I", data, 8)
    ids = list(struct.unpack_from(f"<{tokens}i", data, 20))
    engine = np.frombuffer(data, dtype="<f4", offset=20 + 4 * tokens).reshape(tokens, vocab).astype(np.float64)
    m = ref.Model(model, dtype=np.float64)
    want = np.asarray(m.forward(ids), dtype=np.float64)
    rng = float(want.max() - want.min())
    err = float(np.abs(engine - want).max())
    agree = float((engine.argmax(1) == want.argmax(1)).mean())
    print(f"{tokens} tokens (ids {ids[:8]}...), vocab {vocab}: max |engine - reference| = {err:.3g}, "
          f"logit range {rng:.3g}, relative {err / rng:.3g}; argmax agreement {agree:.3f}")
    return 0 if err <= 1e-3 * rng else 1


if __name__ == "__main__":
    sys.exit(main())
