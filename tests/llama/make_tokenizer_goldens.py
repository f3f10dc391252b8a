#!/usr/bin/env python3
"""Writes tokenizer_goldens.hpp, the expected token ids that test_tokenizer.cpp checks.

Independent references (nothing here shares code with the C++ tokenizers):
  * llama2.c tokenizer: llama2c_encode() below, llama2.c's encode() transcribed line by line
    (dummy-prefix " ", UTF-8 units with byte fallback +3, then the O(n^2) loop that merges the
    best-scoring adjacent pair, leftmost on ties). Each short case is also compared with
    `sentencepiece` on tok512.model; the differences found are written into the header.
  * byte-level BPE (SmolLM2-135M-Instruct): Hugging Face `tokenizers` built from the GGUF's
    tokenizer.ggml.tokens/merges (read with the `gguf` package) as models.BPE with the
    pre-tokenizer SmolLM2's tokenizer.json uses, Sequence[Digits(individual_digits=True),
    ByteLevel(add_prefix_space=False, use_regex=True)], and a ByteLevel decoder; control tokens
    (token_type 3) added as special tokens for the parse_special cases.

Usage (from the repository root):
  pip install gguf==0.19.0 tokenizers==0.23.3 sentencepiece==0.2.3
  python3 tests/llama/make_tokenizer_goldens.py DATA_DIR MODELS_DIR > tests/llama/tokenizer_goldens.hpp
with DATA_DIR = ../shared/data and MODELS_DIR holding SmolLM2-135M-Instruct.Q4_1.gguf.
"""
import os
import re
import struct
import sys

import gguf
import sentencepiece
import tokenizers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

DATA, MODELS = sys.argv[1], sys.argv[2]
GGUF = os.path.join(MODELS, "SmolLM2-135M-Instruct.Q4_1.gguf")


# ---- llama2.c ----------------------------------------------------------------------------------
def load_tok512(path):
    d = open(path, "rb").read()
    off, pieces, scores = 4, [], []
    while off < len(d):
        s, n = struct.unpack_from("<fi", d, off)
        off += 8
        pieces.append(d[off:off + n])
        scores.append(s)
        off += n
    return pieces, scores


PIECES, SCORES = load_tok512(os.path.join(DATA, "stories260K/tok512.bin"))
LOOKUP = {}
for i, p in enumerate(PIECES):
    LOOKUP.setdefault(p, i)


def llama2c_encode(text: bytes, bos=True):
    toks = []
    if text:
        toks.append(LOOKUP[b" "])
    buf = b""
    for k, c in enumerate(text):
        if (c & 0xC0) != 0x80:
            buf = b""
        buf += bytes([c])
        if k + 1 < len(text) and (text[k + 1] & 0xC0) == 0x80 and len(buf) < 4:
            continue
        if buf in LOOKUP:
            toks.append(LOOKUP[buf])
        else:
            toks.extend(b + 3 for b in buf)
        buf = b""
    while True:
        best, best_i, best_id = -1e10, -1, -1
        for i in range(len(toks) - 1):
            j = LOOKUP.get(PIECES[toks[i]] + PIECES[toks[i + 1]])
            if j is not None and SCORES[j] > best:
                best, best_i, best_id = SCORES[j], i, j
        if best_i < 0:
            break
        toks[best_i:best_i + 2] = [best_id]
    return ([1] if bos else []) + toks


def normalise(s):  # the perplexity protocol: <|endoftext|> removed, whitespace runs -> one space
    return " ".join(s.replace("<|endoftext|>", "").split())


SP = sentencepiece.SentencePieceProcessor(model_file=os.path.join(DATA, "stories260K/tok512.model"))

L2C_CASES = [
    ("empty", b""),
    ("once", b"Once upon a time"),
    ("story", b"Once upon a time, there was a little girl named Lily. She loved to play outside."),
    ("punct", b'"Hi!" said Tom. Lily\'s dog (Max) ran: fast; faster -- fastest?'),
    ("digits", b"She had 3 cats and 12 dogs in 2023."),
    ("spaces", b"  two leading,  double  inner, trailing  "),
    ("newline_tab", b"line one\nline two\n\n\tindented"),
    ("latin1", "naïve café – “quoted” façade".encode()),
    ("cjk", "日本語のテキスト".encode()),
    ("emoji", "I like 🍕 and 😀!".encode()),
    ("invalid_utf8", b"ab\xff\xfe c\xc3 \x80\x80 d\xe2\x82 e\xf0\x9f\x98"),
    ("nul", b"a\x00b"),
    ("one_space", b" "),
    ("byte_pieces", b"<0x41> <s> </s> <unk>"),
]
SP_NOTES = []


def sp_compare(name, text):
    try:
        s = text.decode("utf-8")
    except UnicodeDecodeError:
        SP_NOTES.append(f"{name}: not UTF-8, sentencepiece not compared")
        return
    mine = llama2c_encode(text, bos=False)
    ref = SP.encode(s)
    if mine != ref:
        SP_NOTES.append(f"{name}: llama2.c {mine} vs sentencepiece {ref}")


# ---- byte-level BPE ----------------------------------------------------------------------------
R = gguf.GGUFReader(GGUF)
TOKENS = R.fields["tokenizer.ggml.tokens"].contents()
MERGES = R.fields["tokenizer.ggml.merges"].contents()
TYPES = R.fields["tokenizer.ggml.token_type"].contents()
assert R.fields["tokenizer.ggml.pre"].contents() == "smollm"


def hf_tokenizer(special):
    tk = Tokenizer(models.BPE({t: i for i, t in enumerate(TOKENS)}, [tuple(m.split(" ")) for m in MERGES]))
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tk.decoder = decoders.ByteLevel()
    if special:
        tk.add_special_tokens([AddedToken(t, special=True, normalized=False)
                               for t, ty in zip(TOKENS, TYPES) if ty == 3])
    return tk


HF, HF_SPECIAL = hf_tokenizer(False), hf_tokenizer(True)

BPE_CASES = [
    ("ascii", "Hello world"),
    ("sentence", "The quick brown fox jumps over the lazy dog."),
    ("punct", "Wait... what?! (yes) [no] {maybe} <tag> a+b=c; x:y, 100%"),
    ("numbers", "In 2024, 3.14159 and 1,000,000 -- and 007."),
    ("contractions", "I'm sure they'll say it's fine, don't you think? We've seen it. I'D SAY 'NO'."),
    ("apostrophes", "'s 't 're 've 'm 'll 'd '' 'x rock'n'roll"),
    ("spaces", "a  b   c    d"),
    ("lead_trail", "   leading and trailing   "),
    ("newlines", "line one\nline two\n\nline four\n"),
    ("crlf_tabs", "col1\tcol2\r\ncol3\t\tcol4 \t x"),
    ("space_newline", "end. \n\n Next"),
    ("latin", "Café naïve résumé façade Ångström"),
    ("greek_cyrillic", "Αθήνα και Москва"),
    ("cjk", "你好，世界！这是一个测试。日本語のテキスト"),
    ("korean", "한국어 텍스트입니다"),
    ("arabic", "مرحبا بالعالم ١٢٣"),
    ("emoji", "Emoji: 😀👍🏽🇺🇸 and ❤️"),
    ("unicode_space", "a\u00a0b\u3000c\u2009d\u2028e"),
    ("combining", "e\u0301 n\u0303"),
    ("superscripts", "x² + y³ = ½ Ⅻ"),
    ("code", "def foo(x):\n    return x ** 2  # square\n"),
    ("only_spaces", "     "),
    ("single_char", "a"),
    ("special_text", "<|im_start|>user\nhi<|im_end|>"),
    ("no_token_bytes", "a\x04b !\x04! \x1d\x13x \U00040000"),  # bytes without a token: dropped
]
SPECIAL_CASES = [
    ("chat", "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
             "<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"),
    ("adjacent", "<|im_end|><|im_start|><|endoftext|>x<|endoftext|>"),
    ("partial", "<|im_start <|im_end|| <|endoftext|>"),
]


# Pre-tokenization alone (no vocabulary): HF's pre-tokenizers on hand-picked and random strings.
PRE_SMOLLM = HF.pre_tokenizer
PRE_GPT2 = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
PRE_ALPHABET = [" ", " ", " ", "\n", "\t", "\r", "a", "Z", "s", "t", "r", "e", "l", "v", "d", "m", "'", "'", "!",
                ".", "1", "7", "é", "日", "٣", "²", "Ⅻ", "😀", "\u00a0", "\u3000", "\u2028", "-", "_"]


def pre_cases():
    import random
    rng = random.Random(1234)
    cases = [t for _, t in BPE_CASES] + ["", " ", "  ", " \n", "\n ", "a \n b", "x  \t y", "1 2  3", " 1", "a1b2",
                                          "'S 'T", "it's", "  's", "!!'s", " !x", "\t\t!", "\u00a0\u00a0x"]
    for _ in range(300):
        cases.append("".join(rng.choice(PRE_ALPHABET) for _ in range(rng.randint(1, 24))))
    return cases


def offsets(pre, text):  # byte offsets of the piece boundaries
    b = [len(text[:s].encode()) for _, (s, e) in pre.pre_tokenize_str(text)]
    return b + [len(text.encode())]


def fnv1a(ids):
    h = 0xCBF29CE484222325
    for i in ids:
        for b in struct.pack("<i", i):
            h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def c_bytes(b: bytes):
    out = []
    for c in b:
        if c == 0x22 or c == 0x5C:
            out.append("\\" + chr(c))
        elif 0x20 <= c < 0x7F:
            out.append(chr(c))
        else:
            out.append("\\x%02x\"\"" % c)
    return '"' + "".join(out) + '"'


def c_ids(ids, indent="     "):
    s, line = [], indent
    for i in ids:
        t = str(i) + ","
        if len(line) + len(t) + 1 > 100:
            s.append(line)
            line = indent
        line += " " + t
    s.append(line)
    return "{\n" + "\n".join(s) + "}"


def main():
    w = print
    w("// GENERATED by make_tokenizer_goldens.py -- do not edit; see that script for the references.")
    w(f"// tokenizers {tokenizers.__version__}, sentencepiece {sentencepiece.__version__}, gguf package")
    w("#pragma once\n\n#include <cstddef>\n#include <cstdint>\n#include <vector>\n")
    w("namespace tokenizer_goldens {\n")
    w("struct Case {\n  const char* name;\n  const char* text;\n  std::size_t size;\n"
      "  std::vector<std::int32_t> ids;\n};\n")
    w("inline std::uint64_t fnv1a(const std::vector<std::int32_t>& ids, std::size_t n) {\n"
      "  std::uint64_t h = 0xCBF29CE484222325ull;\n"
      "  for (std::size_t k = 0; k < n; ++k) {\n"
      "    const auto u = static_cast<std::uint32_t>(ids[k]);\n"
      "    for (int b = 0; b < 4; ++b) h = (h ^ ((u >> (8 * b)) & 0xFF)) * 0x100000001B3ull;\n"
      "  }\n  return h;\n}\n")

    # llama2.c
    w("// llama2.c (tok512.bin), add_bos = true.")
    w("inline const std::vector<Case>& llama2c_cases() {\n  static const std::vector<Case> cases = {")
    for name, text in L2C_CASES:
        ids = llama2c_encode(text)
        sp_compare(name, text)
        w(f"    {{\"{name}\", {c_bytes(text)}, {len(text)},\n     {c_ids(ids)}}},")
    w("  };\n  return cases;\n}\n")
    # sentencepiece on real text, line by line
    n_lines = n_diff = 0
    first_diff = None
    for line in open(os.path.join(DATA, "text/tinystories-valid-100k.txt"), encoding="utf-8"):
        line = line.strip()
        if not line or line == "<|endoftext|>":
            continue
        n_lines += 1
        if llama2c_encode(line.encode(), bos=False) != SP.encode(line):
            n_diff += 1
            first_diff = first_diff or line[:80]
    w("// llama2.c's encoder vs sentencepiece (tok512.model), both without BOS:")
    for note in SP_NOTES:
        w("//   " + note.replace("\n", "\\n"))
    w(f"//   tinystories-valid-100k.txt, line by line: {n_diff} of {n_lines} lines differ"
      + (f" (first: {first_diff!r})" if first_diff else ""))
    w()
    for tag, fname in [("sample", "tinystories-sample.txt"), ("valid100k", "tinystories-valid-100k.txt")]:
        text = normalise(open(os.path.join(DATA, "text", fname), encoding="utf-8", newline="").read()).encode()
        ids = llama2c_encode_fast(text)
        w(f"// {fname}, normalised (<|endoftext|> removed, whitespace runs -> one space, trimmed),")
        w("// encoded without BOS: token count and FNV-1a of the ids (int32 little-endian bytes).")
        w(f"inline constexpr std::size_t kLlama2c_{tag}_tokens = {len(ids)};")
        w(f"inline constexpr std::uint64_t kLlama2c_{tag}_fnv = 0x{fnv1a(ids):016X}ull;")
    w()

    # BPE
    w("// SmolLM2-135M-Instruct byte-level BPE, add_bos = false, parse_special = false.")
    w("inline const std::vector<Case>& bpe_cases() {\n  static const std::vector<Case> cases = {")
    for name, text in BPE_CASES:
        ids = HF.encode(text).ids
        assert HF.decode(ids) == text or name == "no_token_bytes", name
        b = text.encode()
        w(f"    {{\"{name}\", {c_bytes(b)}, {len(b)},\n     {c_ids(ids)}}},")
    w("  };\n  return cases;\n}\n")
    w("// The same with parse_special = true (control tokens added to the reference as special tokens).")
    w("inline const std::vector<Case>& bpe_special_cases() {\n  static const std::vector<Case> cases = {")
    for name, text in SPECIAL_CASES + [(n, t) for n, t in BPE_CASES if n == "special_text"]:
        ids = HF_SPECIAL.encode(text).ids
        b = text.encode()
        w(f"    {{\"{name}\", {c_bytes(b)}, {len(b)},\n     {c_ids(ids)}}},")
    w("  };\n  return cases;\n}\n")
    w("// Pre-tokenization: the byte offsets where the pieces start, then the text's length, for the")
    w("// SmolLM2 pre-tokenizer (Digits + ByteLevel regex) and for the plain GPT-2 regex (ByteLevel).")
    w("struct PreCase {\n  const char* text;\n  std::size_t size;\n  std::vector<std::size_t> smollm, gpt2;\n};")
    w("inline const std::vector<PreCase>& pre_cases() {\n  static const std::vector<PreCase> cases = {")
    for text in pre_cases():
        b = text.encode()
        w(f"    {{{c_bytes(b)}, {len(b)},\n     {c_ids(offsets(PRE_SMOLLM, text))},\n     {c_ids(offsets(PRE_GPT2, text))}}},")
    w("  };\n  return cases;\n}\n")
    wiki = open(os.path.join(DATA, "text/wikitext-2-raw-test.txt"), encoding="utf-8", newline="").read()
    head = wiki[:2000]
    ids = HF.encode(head).ids
    w("// wikitext-2-raw-test.txt: the first 2000 characters (this many UTF-8 bytes), parse_special = false.")
    w(f"inline constexpr std::size_t kWikiHeadBytes = {len(head.encode())};")
    w(f"inline const std::vector<std::int32_t>& wiki_head_ids() {{\n  static const std::vector<std::int32_t> ids = {c_ids(ids, '   ')};\n  return ids;\n}}\n")
    full = HF.encode(wiki).ids
    w("// The whole of wikitext-2-raw-test.txt: token count, FNV-1a of the first 8192 ids and of all.")
    w(f"inline constexpr std::size_t kWikiTokens = {len(full)};")
    w(f"inline constexpr std::uint64_t kWikiFnv8k = 0x{fnv1a(full[:8192]):016X}ull;")
    w(f"inline constexpr std::uint64_t kWikiFnv = 0x{fnv1a(full):016X}ull;")
    ts = open(os.path.join(DATA, "text/tinystories-valid-100k.txt"), encoding="utf-8", newline="").read()
    tsids = HF.encode(ts).ids
    w("// tinystories-valid-100k.txt as it is (not normalised), BPE: token count and FNV-1a.")
    w(f"inline constexpr std::size_t kBpeValid100kTokens = {len(tsids)};")
    w(f"inline constexpr std::uint64_t kBpeValid100kFnv = 0x{fnv1a(tsids):016X}ull;")
    w("\n}  // namespace tokenizer_goldens")


def llama2c_encode_fast(text: bytes):
    """The same algorithm with a heap keyed by (-score, position) for the long texts; it is
    checked against llama2c_encode() on the sample below, where both are affordable."""
    import heapq
    sym = llama2c_encode(b"", bos=False)
    if text:
        sym = [LOOKUP[b" "]]
        buf = b""
        for k, c in enumerate(text):
            if (c & 0xC0) != 0x80:
                buf = b""
            buf += bytes([c])
            if k + 1 < len(text) and (text[k + 1] & 0xC0) == 0x80 and len(buf) < 4:
                continue
            sym.extend([LOOKUP[buf]] if buf in LOOKUP else [b + 3 for b in buf])
            buf = b""
    m = len(sym)
    nxt, prv, heap = list(range(1, m + 1)), list(range(-1, m - 1)), []

    def push(i):
        j = nxt[i] if i >= 0 else m
        if j < m:
            t = LOOKUP.get(PIECES[sym[i]] + PIECES[sym[j]])
            if t is not None and SCORES[t] > -1e10:
                heapq.heappush(heap, (-SCORES[t], i, j, sym[i], sym[j], t))

    for i in range(m - 1):
        push(i)
    while heap:
        _, i, j, a, b, t = heapq.heappop(heap)
        if sym[i] != a or sym[j] != b or nxt[i] != j:
            continue
        sym[i], sym[j], nxt[i] = t, -1, nxt[j]
        if nxt[j] < m:
            prv[nxt[j]] = i
        push(prv[i])
        push(i)
    out = [s for s in sym if s >= 0]
    return out


if __name__ == "__main__":
    sample = normalise(open(os.path.join(DATA, "text/tinystories-sample.txt"), encoding="utf-8", newline="").read()).encode()
    assert llama2c_encode_fast(sample) == llama2c_encode(sample, bos=False)
    main()
