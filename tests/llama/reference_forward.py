#!/usr/bin/env python3
"""Independent reference forward pass for llama-architecture GGUF models (numpy).

It shares no code with the C++ engine: the file is read with llama.cpp's own Python package
(`gguf.GGUFReader`) and weights are dequantized with `gguf.quants.dequantize`; the model is
written out here from the Llama definition: token embedding; per layer x += Wo attn(RoPE(Wq
n(x)), RoPE(Wk n(x)), Wv n(x)) with causal softmax(q.k / sqrt(head_dim)) and grouped-query
attention (query head h reads KV head h // (n_head / n_head_kv)), then x += Wdown(silu(Wgate
n(x)) * Wup n(x)); final RMSNorm n(x) = x / sqrt(mean(x^2) + eps) * w; logits = Wout x with
Wout = output.weight, or token_embd.weight when the file has no output.weight (tied). eps, RoPE
theta, head counts and the rotated dimension count come from the GGUF metadata.

RoPE pairing (--rope, default adjacent). In GGUF files of architecture "llama", query/key
channels are rotated in ADJACENT PAIRS (2i, 2i+1) of each head, with angle pos * theta^(-2i/d),
d = rope.dimension_count (= head_dim here):
    (x[2i], x[2i+1]) -> (x[2i] cos - x[2i+1] sin, x[2i] sin + x[2i+1] cos).
Evidence: llama.cpp's llama_model_rope_type() returns LLAMA_ROPE_TYPE_NORM for LLM_ARCH_LLAMA
("use what we call a normal RoPE, operating on pairs of consecutive head values"), and its
HF->GGUF converter (convert_hf_to_gguf.py, LlamaModel.modify_tensors) permutes the rows of
q_proj/k_proj with LlamaModel.permute (reshape(n_head, 2, d/2, ...).swapaxes(1, 2)), which turns
Hugging Face's half-split rotation (pairs (i, i + d/2), "NEOX" in llama.cpp) into adjacent pairs.
--rope halfsplit applies the Hugging Face convention to the GGUF weights instead; `--ppl` runs
both. Measured on SmolLM2-135M-Instruct.Q4_1.gguf, WikiText-2 raw test from its first character,
byte-level BPE from the GGUF, float64, consecutive windows of 256 tokens (255 predictions each):
    --ppl ... --ctx 256 --windows 8 --rope both   (2040 predicted tokens)
        adjacent   ppl  38.774   next-token top-1 0.3770
        halfsplit  ppl 376.119   next-token top-1 0.1485
and against llama.cpp itself (llama-cpp-python 0.3.36, CPU; windows 0 and 1):
        llama.cpp  ppl 32.834 / 23.831
        adjacent   ppl 32.406 / 23.655  mean |logit diff| to llama.cpp 0.154 / 0.158, argmax agrees 96.5% / 97.3%
        halfsplit  ppl 227.0  / 242.8   mean |logit diff| to llama.cpp 8.68  / 9.73,  argmax agrees 30.9% / 28.5%
(the remaining adjacent-vs-llama.cpp gap is llama.cpp's own arithmetic: it quantizes activations
to Q8_1/Q8_0 for the quantized matmuls and keeps K/V in fp16).

Usage:
  # logits of a token id list -> [T, vocab] float32 (.npy, or raw little-endian float32 otherwise)
  reference_forward.py MODEL.gguf --tokens 1,9690,28,905 --out logits.npy
  reference_forward.py MODEL.gguf --tokens-file ids.txt --out logits.f32 --last   # last row only
  # token ids of a text (byte-level BPE built from the GGUF's tokenizer metadata, no BOS)
  reference_forward.py MODEL.gguf --text "The capital of France is"
  # compare an engine's logits (same token list) with the reference
  reference_forward.py MODEL.gguf --tokens ... --compare engine_logits.f32
  # the same tokens through llama.cpp (pip install llama-cpp-python==0.3.36): logit differences
  reference_forward.py MODEL.gguf --tokens ... --vs-llama-cpp
  # perplexity / next-token accuracy, adjacent vs half-split RoPE
  reference_forward.py MODEL.gguf --ppl ../shared/data/text/wikitext-2-raw-test.txt \
      --ctx 256 --windows 4 --rope both
Options: --dtype float64 (default) or float32 for all arithmetic; --start-pos P (position of the
first token, default 0).

Requirements: tests/llama/requirements.txt (gguf, numpy; tokenizers for --text/--ppl;
llama-cpp-python only for --vs-llama-cpp).
"""
import argparse
import math
import sys
import time

import numpy as np
import gguf


# ---- GGUF ------------------------------------------------------------------------------------
def field_value(f):
    return f.contents()


class Model:
    def __init__(self, path, dtype=np.float64):
        self.path = path
        self.dtype = dtype
        r = gguf.GGUFReader(path)
        self.reader = r
        self.meta = {k: field_value(f) for k, f in r.fields.items()}
        arch = self.meta["general.architecture"]
        if arch != "llama":
            sys.exit(f"reference_forward: architecture {arch!r} is not supported (llama only)")
        m = lambda k, d=None: self.meta.get(f"{arch}.{k}", d)  # noqa: E731
        self.n_layer = int(m("block_count"))
        self.dim = int(m("embedding_length"))
        self.n_head = int(m("attention.head_count"))
        self.n_kv = int(m("attention.head_count_kv", self.n_head))
        self.head_dim = self.dim // self.n_head
        self.n_rot = int(m("rope.dimension_count", self.head_dim))
        self.eps = float(m("attention.layer_norm_rms_epsilon"))
        self.theta = float(m("rope.freq_base", 10000.0))
        self.context = int(m("context_length"))
        self.tensors = {t.name: t for t in r.tensors}
        self.emb = self.weight("token_embd.weight")
        self.vocab = self.emb.shape[0]
        self.tied = "output.weight" not in self.tensors
        self.out = self.emb if self.tied else self.weight("output.weight")
        self.out_norm = self.weight("output_norm.weight")
        self.layers = []
        for i in range(self.n_layer):
            p = f"blk.{i}."
            self.layers.append({k: self.weight(p + k + ".weight") for k in (
                "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")})

    def weight(self, name):
        """Dequantized tensor as a row-major array of shape (ne[n-1], ..., ne[0])."""
        t = self.tensors[name]
        w = gguf.quants.dequantize(t.data, t.tensor_type)
        shape = tuple(int(x) for x in reversed(t.shape))
        return np.ascontiguousarray(np.asarray(w).reshape(shape), dtype=self.dtype)

    def describe(self):
        return (f"{self.meta.get('general.name', '?')}: {self.n_layer} layers, dim {self.dim}, "
                f"heads {self.n_head}/{self.n_kv} (head_dim {self.head_dim}, rotated {self.n_rot}), "
                f"ffn {self.layers[0]['ffn_gate'].shape[0]}, vocab {self.vocab}, eps {self.eps:g}, "
                f"theta {self.theta:g}, context {self.context}, tied {self.tied}, dtype {np.dtype(self.dtype).name}")

    # ---- forward ------------------------------------------------------------------------------
    def rms_norm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos, style):
        """x: (T, heads, head_dim); rotates the first n_rot channels of each head."""
        d = self.n_rot
        half = d // 2
        inv = self.theta ** (-np.arange(half, dtype=np.float64) * 2.0 / d)
        ang = pos.astype(np.float64)[:, None] * inv[None, :]
        cos = np.cos(ang).astype(self.dtype)[:, None, :]
        sin = np.sin(ang).astype(self.dtype)[:, None, :]
        out = x.copy()
        if style == "adjacent":
            a, b = x[..., 0:d:2], x[..., 1:d:2]
            out[..., 0:d:2] = a * cos - b * sin
            out[..., 1:d:2] = a * sin + b * cos
        elif style == "halfsplit":
            a, b = x[..., :half], x[..., half:d]
            out[..., :half] = a * cos - b * sin
            out[..., half:d] = a * sin + b * cos
        else:
            raise ValueError(style)
        return out

    def forward(self, tokens, start_pos=0, rope="adjacent"):
        """Logits [T, vocab] for every position of `tokens` (full causal attention)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.ndim != 1 or tokens.size == 0:
            raise ValueError("need a non-empty 1-D token list")
        if tokens.min() < 0 or tokens.max() >= self.vocab:
            raise ValueError(f"token ids must be in [0, {self.vocab})")
        T, H, KV, hd = tokens.size, self.n_head, self.n_kv, self.head_dim
        group = H // KV
        pos = np.arange(start_pos, start_pos + T)
        mask = np.triu(np.full((T, T), -np.inf, dtype=self.dtype), 1)
        scale = 1.0 / math.sqrt(hd)
        x = self.emb[tokens].copy()
        for L in self.layers:
            h = self.rms_norm(x, L["attn_norm"])
            q = (h @ L["attn_q"].T).reshape(T, H, hd)
            k = (h @ L["attn_k"].T).reshape(T, KV, hd)
            v = (h @ L["attn_v"].T).reshape(T, KV, hd)
            q = self.rope(q, pos, rope)
            k = self.rope(k, pos, rope)
            kk = np.repeat(k, group, axis=1)  # query head j uses KV head j // group
            vv = np.repeat(v, group, axis=1)
            s = np.einsum("thd,shd->hts", q, kk) * scale + mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            o = np.einsum("hts,shd->thd", s, vv).reshape(T, H * hd)
            x = x + o @ L["attn_output"].T
            h = self.rms_norm(x, L["ffn_norm"])
            g = h @ L["ffn_gate"].T
            u = h @ L["ffn_up"].T
            x = x + ((g / (1.0 + np.exp(-g))) * u) @ L["ffn_down"].T
        x = self.rms_norm(x, self.out_norm)
        return x @ self.out.T

    # ---- tokenizer (for --text / --ppl) -------------------------------------------------------
    def tokenizer(self):
        from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
        if self.meta.get("tokenizer.ggml.model") != "gpt2":
            sys.exit("reference_forward: only byte-level BPE (tokenizer.ggml.model = gpt2) is supported")
        toks = self.meta["tokenizer.ggml.tokens"]
        merges = [tuple(m.split(" ")) for m in self.meta["tokenizer.ggml.merges"]]
        types = self.meta.get("tokenizer.ggml.token_type", [1] * len(toks))
        tk = Tokenizer(models.BPE({t: i for i, t in enumerate(toks)}, merges))
        # SmolLM2's pre-tokenizer (tokenizer.ggml.pre = "smollm"): digits one by one, then GPT-2.
        tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                    pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
        tk.decoder = decoders.ByteLevel()
        tk.add_special_tokens([AddedToken(t, special=True, normalized=False)
                               for t, ty in zip(toks, types) if ty == 3])
        return tk


# ---- perplexity experiment ---------------------------------------------------------------------
def perplexity(model, ids, ctx, windows, rope):
    """Consecutive windows of ctx tokens; every token after the first of a window is predicted
    from the ones before it in that window. Returns (ppl, top-1 accuracy, n predicted)."""
    nll, correct, n = 0.0, 0, 0
    for w in range(windows):
        chunk = ids[w * ctx:(w + 1) * ctx]
        if len(chunk) < 2:
            break
        logits = model.forward(chunk, rope=rope).astype(np.float64)
        lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
        tgt = np.asarray(chunk[1:])
        nll += float(np.sum(lse[:-1] - logits[np.arange(len(tgt)), tgt]))
        correct += int(np.sum(logits[:-1].argmax(-1) == tgt))
        n += len(tgt)
    return math.exp(nll / n), correct / n, n


def parse_ids(s):
    return [int(x) for x in s.replace(",", " ").split()]


def write_logits(path, a):
    a = np.ascontiguousarray(a, dtype=np.float32)
    if path.endswith(".npy"):
        np.save(path, a)
    else:
        a.astype("<f4").tofile(path)


def read_logits(path, shape):
    a = np.load(path) if path.endswith(".npy") else np.fromfile(path, dtype="<f4")
    if a.size != np.prod(shape):
        sys.exit(f"reference_forward: {path} holds {a.size} floats, expected {shape[0]} x {shape[1]}")
    return a.reshape(shape).astype(np.float64)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the module docstring for the model definition and the RoPE finding.")
    ap.add_argument("model", help="GGUF file (llama architecture)")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--tokens", help="token ids, comma or space separated")
    g.add_argument("--tokens-file", help="file of token ids (whitespace or comma separated)")
    g.add_argument("--text", help="print the token ids of TEXT (no BOS) and, with --out, run them")
    g.add_argument("--ppl", metavar="TEXT_FILE", help="perplexity and next-token accuracy on a text file")
    ap.add_argument("--out", help="write logits: .npy, else raw little-endian float32, shape [T, vocab]")
    ap.add_argument("--last", action="store_true", help="write only the last position's logits")
    ap.add_argument("--compare", help="engine logits to compare (same format as --out, all positions)")
    ap.add_argument("--vs-llama-cpp", action="store_true",
                    help="also run llama.cpp itself (pip package llama-cpp-python) on the tokens and compare")
    ap.add_argument("--rope", default="adjacent", choices=["adjacent", "halfsplit", "both"])
    ap.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    ap.add_argument("--start-pos", type=int, default=0)
    ap.add_argument("--ctx", type=int, default=256, help="--ppl window length (tokens)")
    ap.add_argument("--windows", type=int, default=4, help="--ppl number of windows")
    ap.add_argument("--skip-chars", type=int, default=0, help="--ppl: start this many characters into the file")
    args = ap.parse_args()

    t0 = time.time()
    model = Model(args.model, np.float64 if args.dtype == "float64" else np.float32)
    print(f"# {model.describe()} (loaded in {time.time() - t0:.1f}s)", file=sys.stderr)

    if args.ppl:
        text = open(args.ppl, encoding="utf-8").read()[args.skip_chars:]
        ids = model.tokenizer().encode(text[: args.ctx * args.windows * 12]).ids
        if len(ids) < args.ctx * args.windows:
            sys.exit(f"reference_forward: only {len(ids)} tokens of text for {args.windows} windows of {args.ctx}")
        styles = ["adjacent", "halfsplit"] if args.rope == "both" else [args.rope]
        print(f"# {args.ppl}: {args.windows} windows x {args.ctx} tokens, first ids {ids[:8]}")
        for st in styles:
            t0 = time.time()
            ppl, acc, n = perplexity(model, ids, args.ctx, args.windows, st)
            print(f"rope={st:9s} ppl={ppl:10.3f} top1={acc:.4f} predicted={n} ({time.time() - t0:.1f}s)")
        return

    if args.text is not None:
        ids = model.tokenizer().encode(args.text).ids
        print(",".join(map(str, ids)))
        if not args.out and not args.compare and not args.vs_llama_cpp:
            return
    elif args.tokens is not None:
        ids = parse_ids(args.tokens)
    else:
        ids = parse_ids(open(args.tokens_file).read())
    if args.rope == "both":
        sys.exit("reference_forward: --rope both is for --ppl only")
    logits = model.forward(ids, start_pos=args.start_pos, rope=args.rope)
    top = np.argsort(-logits[-1])[:5]
    print("# last position top-5: " + ", ".join(f"{int(i)}:{logits[-1, i]:.4f}" for i in top), file=sys.stderr)
    if args.out:
        write_logits(args.out, logits[-1:] if args.last else logits)
        print(f"# wrote {args.out}: {1 if args.last else len(ids)} x {model.vocab} float32", file=sys.stderr)
    if args.compare:
        report("compare", read_logits(args.compare, logits.shape), logits)
    if args.vs_llama_cpp:
        report("llama.cpp", llama_cpp_logits(args.model, ids), logits)


def report(what, other, logits):
    diff = np.abs(other - logits)
    agree = np.mean(other.argmax(-1) == logits.argmax(-1))
    print(f"{what}: max |diff| {diff.max():.3e} (at {tuple(int(i) for i in np.unravel_index(diff.argmax(), diff.shape))}), "
          f"mean |diff| {diff.mean():.3e}, max |ref| {np.abs(logits).max():.3f}, argmax agreement {agree:.4f}")


def llama_cpp_logits(path, ids):
    """Logits of every position from llama.cpp (CPU, one thread-safe eval of the whole list)."""
    from llama_cpp import Llama
    llm = Llama(model_path=path, n_ctx=max(512, len(ids)), n_batch=max(512, len(ids)), logits_all=True,
                n_threads=2, verbose=False)
    llm.eval(ids)
    return np.array(llm.scores[:len(ids)], dtype=np.float64)


if __name__ == "__main__":
    main()
