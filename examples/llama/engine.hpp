// The example engine's forward pass: a chunk of tokens through every layer, attention through
// memattn's cache::KvCache interface (so any --kv policy plugs in), logits out.
//
//   Engine eng(model, cache);
//   eng.forward(seq, tokens, n, &logits);   // n = 1: decode step; n = C: one prefill chunk
//
// A chunk of n tokens is processed as matrices [n, dim] (one GEMM per weight), each token at
// position cache.tokens(seq) + i; the cache appends the chunk and attends causally within it.
// The chunk is closed (cache.end_chunk) after the logits, so the signals the cache asks for
// (wanted_signals()) go with it: token ids always, and with kSignalTokenLogProbs the log-probs
// log p(x_j | x_<j) of the chunk's tokens (cpu/token_logprobs.hpp) -- token j's from logits row
// j - 1, the chunk's first token's from the previous chunk's last row, which the engine keeps per
// sequence; a sequence's first token has no predictor: NaN (SirLLM gives it the chunk's maximum).
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <limits>
#include <memattn/cache/kv_cache.hpp>
#include <memattn/cpu/token_logprobs.hpp>
#include <string>
#include <vector>

#include "model.hpp"
#include "thread_pool.hpp"

namespace memattn_llama {

class Engine {
 public:
  // pool: threads for the GEMMs (nullptr: single-threaded); the cache has its own Executor.
  Engine(const Model& model, memattn::cache::KvCache& cache, ThreadPool* pool = nullptr)
      : m_(model), cache_(cache), pool_(pool) {
    const ModelConfig& c = m_.cfg;
    inv_freq_.resize(static_cast<std::size_t>(c.head_dim / 2));
    for (int i = 0; i < c.head_dim / 2; ++i)
      inv_freq_[static_cast<std::size_t>(i)] = 1.f / std::pow(c.rope_theta, static_cast<float>(2 * i) / c.head_dim);
  }

  const ModelConfig& config() const { return m_.cfg; }
  memattn::cache::KvCache& cache() { return cache_; }
  // Per-vocabulary-id sentence-end flags (sentence_ends.hpp); forward() turns them into the
  // kSignalSentenceEnds signal when the cache wants it.
  void set_sentence_ends(std::vector<std::uint8_t> table) { sentence_end_ = std::move(table); }

  // Runs `n` tokens of sequence `seq`. logits (optional): [n, vocab] of every position, or of the
  // last only when last_only. Returns false with *error on a cache or argument error.
  bool forward(int seq, const std::int32_t* tokens, int n, Matrix* logits, bool last_only, std::string* error,
               const memattn::cache::ChunkSignals& signals = {}) {
    const ModelConfig& c = m_.cfg;
    const std::int64_t pos0 = cache_.tokens(seq);
    if (n <= 0) return fail(error, "empty chunk");
    if (pos0 + n > c.context) return fail(error, "context exceeded: " + std::to_string(pos0 + n) + " > " + std::to_string(c.context));
    for (int i = 0; i < n; ++i)
      if (tokens[i] < 0 || tokens[i] >= c.vocab) return fail(error, "token id out of range: " + std::to_string(tokens[i]));
    const int D = c.dim, hd = c.head_dim, kvd = c.kv_heads * hd;
    x_.resize(n, D);
    for (int i = 0; i < n; ++i) x_.row(i) = m_.embedding.row(tokens[i]);
    for (int l = 0; l < c.layers; ++l) {
      const LayerWeights& w = m_.layers[static_cast<std::size_t>(l)];
      rmsnorm(x_, w.attn_norm, &xb_);
      matmul(xb_, w.wq, &q_);
      matmul(xb_, w.wk, &k_);
      matmul(xb_, w.wv, &v_);
      rope(&q_, c.heads, pos0);
      rope(&k_, c.kv_heads, pos0);
      att_.resize(n, D);
      const memattn::Status st = cache_.attend(
          seq, l, memattn::make_view<3>(static_cast<const float*>(q_.data()), {n, c.heads, hd}),
          memattn::make_view<3>(static_cast<const float*>(k_.data()), {n, c.kv_heads, hd}),
          memattn::make_view<3>(static_cast<const float*>(v_.data()), {n, c.kv_heads, hd}),
          memattn::make_view<3>(att_.data(), {n, c.heads, hd}));
      if (!memattn::ok(st)) return fail(error, std::string("KV cache attend failed: ") + memattn::status_message(st));
      matmul(att_, w.wo, &tmp_);
      x_ += tmp_;
      rmsnorm(x_, w.ffn_norm, &xb_);
      matmul(xb_, w.w1, &h1_);
      matmul(xb_, w.w3, &h3_);
      h1_ = (h1_.array() / (1.f + (-h1_.array()).exp()) * h3_.array()).matrix();  // SwiGLU
      matmul(h1_, w.w2, &tmp_);
      x_ += tmp_;
      (void)kvd;
    }
    const bool want_lp = (cache_.wanted_signals() & memattn::cache::kSignalTokenLogProbs) != 0 &&
                         signals.token_logprobs == nullptr;
    Matrix* out = logits ? logits : &lp_logits_;
    if (logits || want_lp) {
      if (last_only && !want_lp) {
        rmsnorm(x_.bottomRows(1), m_.final_norm, &xb_);
      } else {
        rmsnorm(x_, m_.final_norm, &xb_);
      }
      matmul(xb_, m_.output(), out);
    }
    memattn::cache::ChunkSignals sig = chunk_signals(tokens, n, signals);
    if (want_lp) {
      if (!chunk_logprobs(seq, pos0, tokens, n, *out, error)) return false;
      sig.token_logprobs = lp_.data();
      sig.count = n;
    }
    const memattn::Status st = cache_.end_chunk(seq, sig);
    if (!memattn::ok(st)) return fail(error, std::string("KV cache end_chunk failed: ") + memattn::status_message(st));
    if (logits && last_only && want_lp) *logits = Matrix(logits->bottomRows(1));
    return true;
  }

 private:
  // The signals the caller did not pass: token ids (always), sentence ends (when the cache asks).
  memattn::cache::ChunkSignals chunk_signals(const std::int32_t* tokens, int n, memattn::cache::ChunkSignals s) {
    const std::uint32_t want = cache_.wanted_signals();
    if (s.token_ids == nullptr) {  // always: cheap, and policies may use them unasked
      s.token_ids = tokens;
      s.count = n;
    }
    if ((want & memattn::cache::kSignalSentenceEnds) && s.sentence_ends == nullptr && !sentence_end_.empty()) {
      flags_.resize(static_cast<std::size_t>(n));
      for (int i = 0; i < n; ++i) flags_[static_cast<std::size_t>(i)] = sentence_end_[static_cast<std::size_t>(tokens[i])];
      s.sentence_ends = flags_.data();
      s.count = n;
    }
    return s;
  }

  // out = x * wᵀ, the output features split across the pool: each thread runs a single-threaded
  // Eigen GEMM on its slice of w's rows (no synchronisation inside a GEMM, which is what makes
  // Eigen's own OpenMP GEMM slow on 2 shared cores). Small GEMVs stay on one thread.
  void matmul(const Matrix& x, const Matrix& w, Matrix* out) const {
    out->resize(x.rows(), w.rows());
    const Eigen::Index rows = w.rows();
    const int threads = pool_ ? pool_->size() : 1;
    if (threads > 1 && x.rows() * rows * x.cols() > (1 << 20)) {
      const Eigen::Index slice = ((rows + threads - 1) / threads + 15) / 16 * 16;
      pool_->parallel_for(threads, [&](std::int64_t t) {
        const Eigen::Index r0 = std::min<Eigen::Index>(rows, t * slice);
        const Eigen::Index n = std::min<Eigen::Index>(rows - r0, slice);
        if (n > 0) out->middleCols(r0, n).noalias() = x * w.middleRows(r0, n).transpose();
      });
      return;
    }
    out->noalias() = x * w.transpose();
  }

  template <class In>
  void rmsnorm(const In& x, const Vector& weight, Matrix* out) const {
    out->resize(x.rows(), x.cols());
    for (Eigen::Index i = 0; i < x.rows(); ++i) {
      const float ms = x.row(i).squaredNorm() / static_cast<float>(x.cols());
      const float inv = 1.f / std::sqrt(ms + m_.cfg.norm_eps);
      out->row(i) = (x.row(i).array() * inv * weight.transpose().array()).matrix();
    }
  }

  // Rotates every head of every row; row i is at position pos0 + i.
  void rope(Matrix* t, int heads, std::int64_t pos0) const {
    const int hd = m_.cfg.head_dim, half = hd / 2;
    for (Eigen::Index i = 0; i < t->rows(); ++i) {
      float* row = t->row(i).data();
      const float pos = static_cast<float>(pos0 + i);
      for (int j = 0; j < half; ++j) {
        const float a = pos * inv_freq_[static_cast<std::size_t>(j)];
        const float cs = std::cos(a), sn = std::sin(a);
        for (int h = 0; h < heads; ++h) {
          float* x = row + h * hd;
          const int i0 = m_.cfg.rope == RopeStyle::kAdjacentPairs ? 2 * j : j;
          const int i1 = m_.cfg.rope == RopeStyle::kAdjacentPairs ? 2 * j + 1 : j + half;
          const float x0 = x[i0], x1 = x[i1];
          x[i0] = x0 * cs - x1 * sn;
          x[i1] = x0 * sn + x1 * cs;
        }
      }
    }
  }

  // lp_[j] = log p(tokens[j] | earlier tokens) from rows (n x vocab) of this chunk and the kept
  // last row of the sequence's previous chunk; keeps this chunk's last row for the next one.
  bool chunk_logprobs(int seq, std::int64_t pos0, const std::int32_t* tokens, int n, const Matrix& rows,
                      std::string* error) {
    const int V = m_.cfg.vocab;
    if (seq < 0) return fail(error, "bad sequence id");
    if (prev_row_.size() <= static_cast<std::size_t>(seq)) prev_row_.resize(static_cast<std::size_t>(seq) + 1);
    Vector& prev = prev_row_[static_cast<std::size_t>(seq)];
    lp_.assign(static_cast<std::size_t>(n), std::numeric_limits<float>::quiet_NaN());
    memattn::Status st = memattn::Status::kSuccess;
    if (pos0 > 0 && prev.size() == V) st = memattn::cpu::token_logprobs(prev.data(), 1, V, V, tokens, lp_.data());
    if (memattn::ok(st) && n > 1) st = memattn::cpu::token_logprobs(rows.data(), n - 1, V, V, tokens + 1, lp_.data() + 1);
    if (!memattn::ok(st)) return fail(error, std::string("token log-probs: ") + memattn::status_message(st));
    prev = rows.row(n - 1).transpose();
    return true;
  }

  const Model& m_;
  memattn::cache::KvCache& cache_;
  ThreadPool* pool_;
  std::vector<float> inv_freq_;
  Matrix x_, xb_, q_, k_, v_, att_, h1_, h3_, tmp_, lp_logits_;
  std::vector<std::uint8_t> sentence_end_, flags_;
  std::vector<float> lp_;
  std::vector<Vector> prev_row_;  // per sequence: logits of its last token (predicts the next)
};

}  // namespace memattn_llama
