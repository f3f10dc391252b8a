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

// Greedy decoding: prefill `prompt` in chunks of `chunk`, then up to max_new tokens, stopping at
// `stop` (e.g. EOS) or the context end. on_token(id) is called for each generated token.
inline bool greedy_generate(Engine& eng, int seq, const std::vector<std::int32_t>& prompt, int max_new, int chunk,
                            std::int32_t stop, const std::function<void(std::int32_t)>& on_token,
                            std::vector<std::int32_t>* generated, std::string* error) {
  if (prompt.empty()) return fail(error, "empty prompt");
  Matrix logits;
  for (std::size_t i = 0; i < prompt.size(); i += static_cast<std::size_t>(chunk)) {
    const int n = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(chunk), prompt.size() - i));
    if (!eng.forward(seq, prompt.data() + i, n, &logits, true, error)) return false;
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
  double seconds = 0;
  std::size_t kv_bytes_peak = 0;
  std::size_t kv_bytes_full = 0;
  std::size_t kv_host_bytes_peak = 0;  // host-offloaded KV (SentenceKV), 0 for device-only caches
  double ppl() const { return predicted ? std::exp(nll_sum / static_cast<double>(predicted)) : 0; }
};

// Perplexity over consecutive windows: each window is BOS + the next ctx-1 text tokens, fed in
// chunks of `chunk` tokens through the cache; every text token is predicted once from the tokens
// before it in its window. The cache is reset between windows. score_from > 0 counts only the
// tokens at window positions >= score_from (BOS is position 0): the spec's E2 streaming protocol
// (NLL over positions >= C, so the first C positions, which see an uncompressed cache, do not
// dilute the difference).
inline bool perplexity(Engine& eng, const std::vector<std::int32_t>& text, std::int32_t bos, int ctx, int chunk,
                       PerplexityResult* r, std::string* error,
                       const std::function<void(std::int64_t done, std::int64_t total)>& progress = {},
                       int score_from = 0) {
  if (ctx < 2) return fail(error, "ctx must be at least 2");
  if (score_from < 0 || score_from >= ctx) return fail(error, "score_from must be in [0, ctx)");
  if (ctx > eng.config().context)
    return fail(error, "ctx " + std::to_string(ctx) + " is larger than the model's context " + std::to_string(eng.config().context));
  if (text.empty()) return fail(error, "no text tokens");
  const auto t0 = std::chrono::steady_clock::now();
  *r = PerplexityResult{};
  const int vocab = eng.config().vocab;
  std::vector<std::int32_t> window;
  Matrix logits;
  for (std::size_t start = 0; start < text.size(); start += static_cast<std::size_t>(ctx - 1)) {
    const std::size_t n_text = std::min<std::size_t>(static_cast<std::size_t>(ctx - 1), text.size() - start);
    window.assign(1, bos);
    window.insert(window.end(), text.begin() + static_cast<std::ptrdiff_t>(start),
                  text.begin() + static_cast<std::ptrdiff_t>(start + n_text));
    if (!memattn::ok(eng.cache().reset(0)) || !memattn::ok(eng.cache().reserve(0, static_cast<int>(window.size()))))
      return fail(error, "KV cache reset/reserve failed");
    r->kv_bytes_full = std::max(r->kv_bytes_full, memattn::cache::full_fp16_bytes(eng.cache().shape(), static_cast<std::int64_t>(window.size())));
    for (std::size_t i = 0; i < window.size(); i += static_cast<std::size_t>(chunk)) {
      const int n = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(chunk), window.size() - i));
      if (!eng.forward(0, window.data() + i, n, &logits, false, error)) return false;
      r->fed += n;
      // Row j predicts window[i + j + 1].
      for (int j = 0; j < n; ++j) {
        const std::size_t target = i + static_cast<std::size_t>(j) + 1;
        if (target >= window.size()) break;
        if (target < static_cast<std::size_t>(score_from)) continue;
        const float* row = logits.row(j).data();
        float mx = row[0];
        for (int v = 1; v < vocab; ++v) mx = std::max(mx, row[v]);
        double sum = 0;
        for (int v = 0; v < vocab; ++v) sum += std::exp(static_cast<double>(row[v] - mx));
        r->nll_sum += std::log(sum) + mx - row[window[target]];
        ++r->predicted;
      }
      if (progress) progress(static_cast<std::int64_t>(start + i + n), static_cast<std::int64_t>(text.size()));
    }
    r->kv_bytes_peak = std::max(r->kv_bytes_peak, eng.cache().peak_bytes());
    r->kv_host_bytes_peak = std::max(r->kv_host_bytes_peak, eng.cache().host_peak_bytes());
  }
  r->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return true;
}

}  // namespace memattn_llama
