// What memattn-llama does with an engine: greedy generation and windowed perplexity. Kept apart
// from the CLI so the tests call the same code.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "engine.hpp"

namespace memattn_llama {

// Collapses every whitespace run to one space and removes "<|endoftext|>" (the data README's
// perplexity protocol for TinyStories text); trims both ends.
inline std::string normalize_text(const std::string& text) {
  std::string s = text;
  const std::string eot = "<|endoftext|>";
  for (std::size_t p = s.find(eot); p != std::string::npos; p = s.find(eot, p)) s.replace(p, eot.size(), " ");
  std::string out;
  bool space = false;
  for (char c : s) {
    const bool ws = c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
    if (ws) {
      space = true;
      continue;
    }
    if (space && !out.empty()) out.push_back(' ');
    space = false;
    out.push_back(c);
  }
  return out;
}

inline int argmax(const float* x, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

// Greedy decoding: prefill `prompt` in chunks of `chunk` (the last one marked prompt_end), then up
// to max_new tokens, stopping at `stop` (e.g. EOS) or the context end. on_token(id) is called for
// each generated token.
inline bool greedy_generate(Engine& eng, int seq, const std::vector<std::int32_t>& prompt, int max_new, int chunk,
                            std::int32_t stop, const std::function<void(std::int32_t)>& on_token,
                            std::vector<std::int32_t>* generated, std::string* error) {
  if (prompt.empty()) return fail(error, "empty prompt");
  Matrix logits;
  for (std::size_t i = 0; i < prompt.size(); i += static_cast<std::size_t>(chunk)) {
    const int n = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(chunk), prompt.size() - i));
    memattn::cache::ChunkSignals sig;
    sig.prompt_end = i + static_cast<std::size_t>(n) == prompt.size();  // once=1 specs compress here
    if (!eng.forward(seq, prompt.data() + i, n, &logits, true, error, sig)) return false;
  }
  const int vocab = eng.config().vocab;
  for (int step = 0; step < max_new; ++step) {
    const std::int32_t next = argmax(logits.data(), vocab);
    if (next == stop) break;
    generated->push_back(next);
    if (on_token) on_token(next);
    if (eng.cache().tokens(seq) >= eng.config().context) break;
    if (step + 1 < max_new && !eng.forward(seq, &next, 1, &logits, true, error)) return false;
  }
  return true;
}

struct PerplexityResult {
  double nll_sum = 0;
  std::int64_t predicted = 0;  // tokens whose NLL counts
  std::int64_t fed = 0;        // tokens run through the model (BOS included)
  std::int64_t windows = 0;
  double seconds = 0;
  std::size_t kv_bytes_peak = 0;
  std::size_t kv_bytes_end = 0;   // bytes held at the end of a window (max over windows)
  std::size_t kv_bytes_full = 0;
  std::size_t kv_host_bytes_peak = 0;  // host-offloaded KV (SentenceKV), 0 for device-only caches
  double ppl() const { return predicted ? std::exp(nll_sum / static_cast<double>(predicted)) : 0; }
};

struct PerplexityOptions {
  int ctx = 0;         // window length, BOS included
  int chunk = 256;     // tokens per forward pass
  int score_from = 0;  // count only the NLL of positions >= score_from (E2 streaming: C)
  // E1 prefix-compress-continue (spec eviction.md §7.5): positions [0, prefix) are the prompt, fed
  // in chunks whose last one ends exactly at `prefix` and carries ChunkSignals::prompt_end (a
  // cache with once=1 compresses there); the continuation is teacher-forced after it and only its
  // NLL counts (score_from is raised to prefix). Windows shorter than ctx are skipped.
  int prefix = 0;
  int stride = 0;       // text tokens between window starts (0: ctx - 1, no overlap)
  int max_windows = 0;  // 0: every window
};

// Perplexity over windows: each window is BOS + the next ctx-1 text tokens, fed in chunks through
// the cache; every text token is predicted from the tokens before it in its window. The cache is
// reset between windows.
inline bool perplexity(Engine& eng, const std::vector<std::int32_t>& text, std::int32_t bos, const PerplexityOptions& o,
                       PerplexityResult* r, std::string* error,
                       const std::function<void(std::int64_t done, std::int64_t total)>& progress = {}) {
  const int ctx = o.ctx, chunk = o.chunk;
  if (ctx < 2) return fail(error, "ctx must be at least 2");
  if (chunk < 1) return fail(error, "chunk must be at least 1");
  if (o.score_from < 0 || o.score_from >= ctx) return fail(error, "score_from must be in [0, ctx)");
  if (o.prefix < 0 || o.prefix >= ctx) return fail(error, "prefix must be in [0, ctx)");
  if (o.stride < 0 || o.max_windows < 0) return fail(error, "stride and windows must be >= 0");
  if (ctx > eng.config().context)
    return fail(error, "ctx " + std::to_string(ctx) + " is larger than the model's context " + std::to_string(eng.config().context));
  if (text.empty()) return fail(error, "no text tokens");
  const int score_from = std::max(o.score_from, o.prefix);
  const std::size_t stride = static_cast<std::size_t>(o.stride > 0 ? o.stride : ctx - 1);
  const auto t0 = std::chrono::steady_clock::now();
  *r = PerplexityResult{};
  const int vocab = eng.config().vocab;
  std::vector<std::int32_t> window;
  Matrix logits;
  for (std::size_t start = 0; start < text.size(); start += stride) {
    if (o.max_windows > 0 && r->windows >= o.max_windows) break;
    const std::size_t n_text = std::min<std::size_t>(static_cast<std::size_t>(ctx - 1), text.size() - start);
    if (o.prefix > 0 && n_text < static_cast<std::size_t>(ctx - 1)) break;  // E1: whole windows only
    window.assign(1, bos);
    window.insert(window.end(), text.begin() + static_cast<std::ptrdiff_t>(start),
                  text.begin() + static_cast<std::ptrdiff_t>(start + n_text));
    if (!memattn::ok(eng.cache().reset(0)) || !memattn::ok(eng.cache().reserve(0, static_cast<int>(window.size()))))
      return fail(error, "KV cache reset/reserve failed");
    ++r->windows;
    r->kv_bytes_full = std::max(r->kv_bytes_full, memattn::cache::full_fp16_bytes(eng.cache().shape(), static_cast<std::int64_t>(window.size())));
    for (std::size_t i = 0; i < window.size();) {
      std::size_t n = std::min<std::size_t>(static_cast<std::size_t>(chunk), window.size() - i);
      memattn::cache::ChunkSignals sig;
      if (o.prefix > 0 && i < static_cast<std::size_t>(o.prefix)) {  // the prompt ends a chunk
        n = std::min(n, static_cast<std::size_t>(o.prefix) - i);
        sig.prompt_end = i + n == static_cast<std::size_t>(o.prefix);
      }
      if (!eng.forward(0, window.data() + i, static_cast<int>(n), &logits, false, error, sig)) return false;
      r->fed += static_cast<std::int64_t>(n);
      // Row j predicts window[i + j + 1].
      for (std::size_t j = 0; j < n; ++j) {
        const std::size_t target = i + j + 1;
        if (target >= window.size()) break;
        if (target < static_cast<std::size_t>(score_from)) continue;
        const float* row = logits.row(static_cast<Eigen::Index>(j)).data();
        float mx = row[0];
        for (int v = 1; v < vocab; ++v) mx = std::max(mx, row[v]);
        double sum = 0;
        for (int v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v] - mx));
        r->nll_sum += std::log(sum) + mx - row[window[target]];
        ++r->predicted;
      }
      i += n;
      if (progress) progress(static_cast<std::int64_t>(start + i), static_cast<std::int64_t>(text.size()));
    }
    r->kv_bytes_peak = std::max(r->kv_bytes_peak, eng.cache().peak_bytes());
    r->kv_bytes_end = std::max(r->kv_bytes_end, eng.cache().bytes());
    r->kv_host_bytes_peak = std::max(r->kv_host_bytes_peak, eng.cache().host_peak_bytes());
  }
  if (r->windows == 0) return fail(error, "the text is shorter than one window");
  r->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return true;
}

// Consecutive non-overlapping windows; score_from > 0 counts only the tokens at window positions
// >= score_from (BOS is position 0): the spec's E2 streaming protocol (NLL over positions >= C, so
// the first C positions, which see an uncompressed cache, do not dilute the difference).
inline bool perplexity(Engine& eng, const std::vector<std::int32_t>& text, std::int32_t bos, int ctx, int chunk,
                       PerplexityResult* r, std::string* error,
                       const std::function<void(std::int64_t done, std::int64_t total)>& progress = {},
                       int score_from = 0) {
  PerplexityOptions o;
  o.ctx = ctx;
  o.chunk = chunk;
  o.score_from = score_from;
  return perplexity(eng, text, bos, o, r, error, progress);
}

}  // namespace memattn_llama
