// `memattn-llama layer-sensitivity`: the offline measurement behind EpiCache's layer budgets (spec
// eviction.md §3.12; reference apple/ml-epicache data/layer_scores/layer_profile.py), run on the
// real model and real text; writes an evict::LayerScoreTable (evict/layer_scores.hpp).
//
// Each sample (BOS + ctx - 1 text tokens) runs twice through the engine: with full causal
// attention and with the reference's block mask, where the query at position i of block
// b = i / block sees
//   * its own block causally: [b·block, i];
//   * the last `overlap` = int(block · overlap_ratio) positions of block b - 1;
//   * the sink positions [0, sink) when i >= sink.
// Keys of layer l (post-RoPE, as the cache holds them) change under the mask only through the
// layers before l, so layer 0 always scores 1. Per (layer, KV head) the keys are cut into windows
// of `simwin` positions; the score is the cosine similarity of the flattened window under the two
// runs (torch.cosine_similarity: each norm clamped to >= 1e-8), averaged over KV heads and windows,
// then over samples. Higher = the layer's keys need less than the whole context.
// Both runs use BlockMaskCache below (fp32, one attention code path); only the mask differs, so a
// mask that hides nothing scores exactly 1 everywhere.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memattn/cache/kv_cache.hpp>
#include <memattn/evict/layer_scores.hpp>
#include <string>
#include <vector>

#include "engine.hpp"
#include "thread_pool.hpp"

namespace memattn_llama {

struct SensitivityOptions {
  int ctx = 1024;         // tokens per sample, BOS included
  int samples = 4;        // samples spread evenly over the text
  int block = 256;        // attention block (reference attention_window_size 4096 for 7-8B models)
  int sink = 32;          // sink positions every later query sees (reference 128)
  double overlap = 0.5;   // fraction of the previous block visible (reference overlap_ratio 0.5)
  int simwin = 100;       // similarity window in positions (reference similarity_window_size 100)
  int chunk = 256;        // prefill chunk of the engine
};

// A single-sequence fp32 KV cache whose attention applies the reference's block mask (block = 0:
// full causal) and keeps every layer's keys for the comparison.
class BlockMaskCache final : public memattn::cache::KvCache {
 public:
  BlockMaskCache(const memattn::cache::CacheShape& shape, int block, int sink, int overlap)
      : shape_(shape), block_(block), sink_(sink), overlap_(overlap),
        k_(static_cast<std::size_t>(shape.layers)), v_(k_.size()) {}

  const char* spec() const override { return block_ > 0 ? "block-mask" : "full-causal"; }
  const memattn::cache::CacheShape& shape() const override { return shape_; }

  // Whether the query at position i sees the key at position j (j <= i).
  bool visible(std::int64_t i, std::int64_t j) const {
    if (block_ <= 0) return j <= i;
    const std::int64_t b = i / block_, start = b * block_;
    if (j >= start && j <= i) return true;
    if (i >= sink_ && j < sink_) return true;
    return b > 0 && overlap_ > 0 && j < start && j >= std::max<std::int64_t>(start - block_, start - overlap_);
  }

  memattn::Status attend(int seq, int layer, memattn::TensorView<const float, 3> q, memattn::TensorView<const float, 3> k,
                         memattn::TensorView<const float, 3> v, memattn::TensorView<float, 3> out) override {
    if (seq != 0 || layer < 0 || layer >= shape_.layers) return memattn::Status::kErrorInvalidArgument;
    const int Hq = shape_.q_heads, Hkv = shape_.kv_heads, D = shape_.head_dim, G = Hq / Hkv;
    const std::int64_t n = q.shape[0];
    std::vector<float>& K = k_[static_cast<std::size_t>(layer)];
    std::vector<float>& V = v_[static_cast<std::size_t>(layer)];
    const std::int64_t pos0 = static_cast<std::int64_t>(K.size()) / (static_cast<std::int64_t>(Hkv) * D);
    if (pos0 + n > shape_.max_tokens) return memattn::Status::kErrorCapacityExceeded;
    for (std::int64_t i = 0; i < n; ++i)
      for (int h = 0; h < Hkv; ++h) {
        K.insert(K.end(), k.ptr(i, h), k.ptr(i, h) + D);
        V.insert(V.end(), v.ptr(i, h), v.ptr(i, h) + D);
      }
    const std::int64_t rows = pos0 + n;
    using Strided = Eigen::Map<const Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>, 0,
                               Eigen::OuterStride<>>;
    const float scale = 1.f / std::sqrt(static_cast<float>(D));
    Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> Q(n, D), S, O;
    for (int h = 0; h < Hq; ++h) {
      const int kh = h / G;
      const Strided Kh(K.data() + static_cast<std::size_t>(kh) * D, rows, D, Eigen::OuterStride<>(Hkv * D));
      const Strided Vh(V.data() + static_cast<std::size_t>(kh) * D, rows, D, Eigen::OuterStride<>(Hkv * D));
      for (std::int64_t i = 0; i < n; ++i)
        for (int d = 0; d < D; ++d) Q(i, d) = q.ptr(i, h)[d] * scale;
      S.noalias() = Q * Kh.transpose();
      for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t p = pos0 + i;
        float mx = -std::numeric_limits<float>::infinity();
        for (std::int64_t j = 0; j < rows; ++j) {
          if (!visible(p, j)) S(i, j) = -std::numeric_limits<float>::infinity();
          mx = std::max(mx, S(i, j));
        }
        double l = 0;
        for (std::int64_t j = 0; j < rows; ++j) l += (S(i, j) = std::exp(S(i, j) - mx));
        S.row(i) /= static_cast<float>(l);
      }
      O.noalias() = S * Vh;
      for (std::int64_t i = 0; i < n; ++i) std::copy_n(O.row(i).data(), D, out.ptr(i, h));
    }
    return memattn::Status::kSuccess;
  }
  memattn::Status end_chunk(int seq, const memattn::cache::ChunkSignals&) override {
    if (seq != 0) return memattn::Status::kErrorInvalidArgument;
    tokens_ = static_cast<std::int64_t>(k_[0].size()) / (static_cast<std::int64_t>(shape_.kv_heads) * shape_.head_dim);
    return memattn::Status::kSuccess;
  }
  memattn::Status reset(int seq) override {
    if (seq != 0) return memattn::Status::kErrorInvalidArgument;
    for (auto& x : k_) x.clear();
    for (auto& x : v_) x.clear();
    tokens_ = 0;
    return memattn::Status::kSuccess;
  }
  std::int64_t tokens(int seq) const override { return seq == 0 ? tokens_ : 0; }
  std::size_t bytes() const override {
    std::size_t b = 0;
    for (std::size_t l = 0; l < k_.size(); ++l) b += (k_[l].size() + v_[l].size()) * sizeof(float);
    return b;
  }
  std::size_t peak_bytes() const override { return bytes(); }

  // Keys of a layer: [tokens][kv_heads][head_dim].
  const std::vector<float>& keys(int layer) const { return k_[static_cast<std::size_t>(layer)]; }

 private:
  memattn::cache::CacheShape shape_;
  int block_, sink_, overlap_;
  std::vector<std::vector<float>> k_, v_;
  std::int64_t tokens_ = 0;
};

// Options the measurement can work with (bad input: false and a message).
inline bool check_sensitivity_options(const SensitivityOptions& o, int model_context, std::size_t text_tokens,
                                      std::string* error) {
  if (o.ctx < 2 || o.ctx > model_context || o.samples < 1 || o.block < 1 || o.sink < 0 || !(o.overlap >= 0) ||
      o.overlap > 1 || o.simwin < 1 || o.chunk < 1)
    return fail(error, "layer-sensitivity: need 2 <= ctx <= the model's context (" + std::to_string(model_context) +
                           "), samples, block, simwin, chunk >= 1, sink >= 0, overlap in [0, 1]");
  if (o.block >= o.ctx)
    return fail(error, "layer-sensitivity: block (" + std::to_string(o.block) + ") must be < ctx (" +
                           std::to_string(o.ctx) + "), or the mask hides nothing");
  if (text_tokens < static_cast<std::size_t>(o.ctx - 1))
    return fail(error, "layer-sensitivity: the text is too short (" + std::to_string(text_tokens) + " tokens, need " +
                           std::to_string(o.ctx - 1) + ")");
  return true;
}

namespace sensitivity_detail {

inline bool run(const Model& model, ThreadPool* pool, const std::vector<std::int32_t>& tokens, int chunk,
                BlockMaskCache* cache, std::string* error) {
  Engine eng(model, *cache, pool);
  for (std::size_t i = 0; i < tokens.size(); i += static_cast<std::size_t>(chunk)) {
    const int n = static_cast<int>(std::min<std::size_t>(static_cast<std::size_t>(chunk), tokens.size() - i));
    if (!eng.forward(0, tokens.data() + i, n, nullptr, false, error)) return false;
  }
  return true;
}

// Mean over KV heads and windows of the windowed cosine similarity of two [T][Hkv][D] key sets.
inline double windowed_key_similarity(const std::vector<float>& a, const std::vector<float>& b, int T, int Hkv, int D,
                                      int simwin) {
  double total = 0;
  int count = 0;
  for (int h = 0; h < Hkv; ++h)
    for (int t0 = 0; t0 < T; t0 += simwin) {
      double dot = 0, na = 0, nb = 0;
      for (int t = t0; t < std::min(T, t0 + simwin); ++t) {
        const std::size_t off = (static_cast<std::size_t>(t) * Hkv + h) * D;
        for (int d = 0; d < D; ++d) {
          const double x = a[off + d], y = b[off + d];
          dot += x * y;
          na += x * x;
          nb += y * y;
        }
      }
      total += dot / (std::max(std::sqrt(na), 1e-8) * std::max(std::sqrt(nb), 1e-8));
      ++count;
    }
  return total / count;
}

}  // namespace sensitivity_detail

// Fills table->scores and table->profile (model name and hash are the caller's). `text`: the real
// text's tokens (no BOS); sample s starts at an even spread over the text.
inline bool measure_layer_sensitivity(const Model& model, ThreadPool* pool, const std::vector<std::int32_t>& text,
                                      const SensitivityOptions& o, memattn::evict::LayerScoreTable* table,
                                      std::string* error) {
  using namespace sensitivity_detail;
  const ModelConfig& c = model.cfg;
  if (!check_sensitivity_options(o, c.context, text.size(), error)) return false;
  memattn::cache::CacheShape shape{c.layers, c.heads, c.kv_heads, c.head_dim, o.ctx, 1};
  const int overlap = static_cast<int>(o.block * o.overlap);  // int() truncation as the reference
  table->scores.assign(static_cast<std::size_t>(c.layers), 0.0);
  const std::size_t room = text.size() - static_cast<std::size_t>(o.ctx - 1);
  for (int s = 0; s < o.samples; ++s) {
    const std::size_t base = o.samples == 1 ? 0 : room * static_cast<std::size_t>(s) / static_cast<std::size_t>(o.samples - 1);
    std::vector<std::int32_t> toks(1, c.bos);
    toks.insert(toks.end(), text.begin() + static_cast<std::ptrdiff_t>(base),
                text.begin() + static_cast<std::ptrdiff_t>(base) + (o.ctx - 1));
    BlockMaskCache full(shape, 0, 0, 0), masked(shape, o.block, o.sink, overlap);
    if (!run(model, pool, toks, o.chunk, &full, error) || !run(model, pool, toks, o.chunk, &masked, error)) return false;
    for (int l = 0; l < c.layers; ++l)
      table->scores[static_cast<std::size_t>(l)] +=
          windowed_key_similarity(full.keys(l), masked.keys(l), o.ctx, c.kv_heads, c.head_dim, o.simwin) / o.samples;
  }
  char profile[256];
  std::snprintf(profile, sizeof profile,
                "windowed key cosine, full causal vs block mask: %d samples x %d tokens, block %d, sink %d, overlap %d, "
                "window %d",
                o.samples, o.ctx, o.block, o.sink, overlap, o.simwin);
  table->profile = profile;
  return true;
}

}  // namespace memattn_llama
