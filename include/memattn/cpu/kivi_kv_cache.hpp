// The "kivi" KV policy on the CPU (specs/quantization.md §4, §5, §7): keys quantised per channel
// over blocks of G tokens, values per token over groups of G_V channels, 2/4/8 bits each, fp16
// scale and zero (memattn/quant/kivi.hpp), plus an exact fp16 ring of the newest tokens.
//
// State per (sequence, layer, KV head) is a pure function of the tokens appended (§4.1):
//   n_q = G * floor(max(0, N - R) / G) tokens live in block records [block j][KV head h],
//   tokens [n_q, N) live in the ring (R + G rows, slot = position mod (R + G)), bit-equal to the
//   fp16 rounding of the input. So at least min(N, R) newest tokens are always exact, blocks are
//   written once and never requantised, and prefill, chunked prefill and token-by-token decode
//   give identical bytes.
//
// attend(): the chunk's queries attend over the state before the chunk (quantised blocks, then
// the ring) and, causally, over the chunk's own tokens in fp16 (prefill never reads dequantised
// copies of the chunk it is computing, §4.2); one online softmax over all three segments. For a
// decode step's rows on AVX2 builds, logits and values come straight from the codes with the
// scales folded in (kivi_block_decode.hpp, §7). Otherwise the blocks are dequantised 256 tokens
// at a time into fp32 scratch (code * scale + zero, the spec's canonical value) and enter one
// Eigen product per tile and side (folding the scales with Eigen needed ~20 small expressions
// per 32-token block, slower). Then the chunk is appended: the blocks the new canonical state
// needs are quantised (one task per block and head), the tail goes to the ring.
//
// Bytes reported: allocated block records (metadata included) + ring capacity, all sequences and
// layers. Bad input (NaN/Inf or |x| > 65504 in k or v, which fp16 storage cannot hold) returns
// kErrorNonFinite and writes nothing (the engine-facing contract: errors leave the cache
// unchanged); the poisoned-group encoding of quant::quantize_block is therefore never reached here.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include <Eigen/Core>

#include "memattn/cache/kv_cache.hpp"
#include "memattn/core/executor.hpp"
#include "memattn/cpu/code_unpack.hpp"
#include "memattn/cpu/convert.hpp"
#include "memattn/cpu/dense_block_decode.hpp"
#include "memattn/cpu/kivi_block_decode.hpp"
#include "memattn/cpu/kivi_quantize.hpp"
#include "memattn/cpu/kv_cache_helpers.hpp"
#include "memattn/quant/kivi.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {

class KiviKvCache final : public cache::KvCache {
 public:
  // cfg.head_dim must equal shape.head_dim (0 takes it from the shape).
  static Status create(const cache::CacheShape& shape, quant::KvQuantConfig cfg, const Executor& executor,
                       std::unique_ptr<KiviKvCache>* out) {
    if (out == nullptr) return Status::kErrorNullPointer;
    MEMATTN_RETURN_IF_ERROR(cache::validate_shape(shape));
    if (cfg.head_dim == 0) cfg.head_dim = shape.head_dim;
    if (cfg.head_dim != shape.head_dim) return Status::kErrorInvalidArgument;
    MEMATTN_RETURN_IF_ERROR(cfg.validate());
    out->reset(new KiviKvCache(shape, cfg, executor));
    return Status::kSuccess;
  }

  const char* spec() const override { return spec_.c_str(); }
  const cache::CacheShape& shape() const override { return shape_; }
  const quant::KvQuantConfig& config() const { return cfg_; }

  Status attend(int seq, int layer, TensorView<const float, 3> q, TensorView<const float, 3> k,
                TensorView<const float, 3> v, TensorView<float, 3> out) override {
    MEMATTN_RETURN_IF_ERROR(check_tensor(q, {k.shape[0], shape_.q_heads, shape_.head_dim}));
    MEMATTN_RETURN_IF_ERROR(check_tensor(out, {k.shape[0], shape_.q_heads, shape_.head_dim}));
    MEMATTN_RETURN_IF_ERROR(stage(seq, layer, k, v));
    Segment& sg = segment(seq, layer);
    attend_stored(sg, len_[seq], q, out);
    append(sg, len_[seq], k.shape[0]);
    pending_[seq] = k.shape[0];
    return Status::kSuccess;
  }

  Status append(int seq, int layer, TensorView<const float, 3> k, TensorView<const float, 3> v) override {
    MEMATTN_RETURN_IF_ERROR(stage(seq, layer, k, v));
    append(segment(seq, layer), len_[seq], k.shape[0]);
    pending_[seq] = k.shape[0];
    return Status::kSuccess;
  }

  Status end_chunk(int seq, const cache::ChunkSignals&) override {
    if (seq < 0 || seq >= shape_.max_sequences) return Status::kErrorInvalidArgument;
    const std::int64_t n = pending_[seq];
    for (int l = 0; l < shape_.layers; ++l)
      if (segment(seq, l).size != len_[seq] + n) return Status::kErrorInvalidArgument;  // a layer was skipped
    len_[seq] += n;
    pending_[seq] = 0;
    return Status::kSuccess;
  }

  Status reset(int seq) override {
    if (seq < 0 || seq >= shape_.max_sequences) return Status::kErrorInvalidArgument;
    for (int l = 0; l < shape_.layers; ++l) {
      Segment& sg = segment(seq, l);
      bytes_ -= sg.bytes();
      sg = Segment{};
    }
    len_[seq] = 0;
    pending_[seq] = 0;
    return Status::kSuccess;
  }

  Status reserve(int seq, int tokens) override {
    if (seq < 0 || seq >= shape_.max_sequences || tokens < 0) return Status::kErrorInvalidArgument;
    if (tokens > shape_.max_tokens) return Status::kErrorCapacityExceeded;
    for (int l = 0; l < shape_.layers; ++l) {
      Segment& sg = segment(seq, l);
      set_block_capacity(sg, std::max(sg.block_capacity, quantized_for(tokens) / cfg_.group));
    }
    return Status::kSuccess;
  }

  std::int64_t tokens(int seq) const override { return seq >= 0 && seq < shape_.max_sequences ? len_[seq] : 0; }
  std::size_t bytes() const override { return bytes_; }
  std::size_t peak_bytes() const override { return peak_; }

  // ---- Introspection (tests, tools) ----
  // Canonical n_q for N tokens.
  std::int64_t quantized_for(std::int64_t N) const {
    const std::int64_t G = cfg_.group;
    return G * (std::max<std::int64_t>(0, N - cfg_.residual) / G);
  }
  // Tokens of (seq, layer) held in blocks / appended (including an open chunk).
  std::int64_t quantized_tokens(int seq, int layer) const { return segment(seq, layer).nq; }
  std::int64_t stored_tokens(int seq, int layer) const { return segment(seq, layer).size; }
  // Block record j of KV head h.
  quant::BlockView block(int seq, int layer, int h, std::int64_t j) const {
    return quant::BlockView{record(segment(seq, layer), j, h), cfg_, layout_};
  }
  // Ring row of token position pos (n_q <= pos < size), KV head h.
  const Half* ring_k(int seq, int layer, int h, std::int64_t pos) const {
    return segment(seq, layer).ring_k.data() + ring_offset(pos, h);
  }
  const Half* ring_v(int seq, int layer, int h, std::int64_t pos) const {
    return segment(seq, layer).ring_v.data() + ring_offset(pos, h);
  }

 private:
  struct alignas(16) Line {
    std::uint8_t b[16];
  };
  struct Segment {
    std::vector<Line> blocks;           // [block_capacity][Hkv] records
    std::vector<Half> ring_k, ring_v;   // [R + G][Hkv][D]
    std::int64_t block_capacity = 0;
    std::int64_t nq = 0;                // quantised tokens
    std::int64_t size = 0;              // tokens appended (incl. an open chunk)
    std::size_t bytes() const { return blocks.size() * sizeof(Line) + (ring_k.size() + ring_v.size()) * sizeof(Half); }
  };
  struct Scratch {
    std::vector<float> buf;
  };

  KiviKvCache(const cache::CacheShape& shape, const quant::KvQuantConfig& cfg, const Executor& executor)
      : shape_(shape),
        cfg_(cfg),
        layout_(quant::block_layout(cfg)),
        executor_(executor),
        segments_(static_cast<std::size_t>(shape.max_sequences) * shape.layers),
        len_(static_cast<std::size_t>(shape.max_sequences), 0),
        pending_(static_cast<std::size_t>(shape.max_sequences), 0),
        scratch_(static_cast<std::size_t>(executor.concurrency())) {
    spec_ = "kivi:kbits=" + std::to_string(cfg.bits_k) + ",vbits=" + std::to_string(cfg.bits_v) +
            ",group=" + std::to_string(cfg.group) + ",residual=" + std::to_string(cfg.residual);
  }

  // Validates a chunk for (seq, layer) and converts it to fp16 into chunk_k_/chunk_v_
  // ([n][Hkv][D]: exactly what the ring and the quantiser see); writes nothing of the cache.
  Status stage(int seq, int layer, const TensorView<const float, 3>& k, const TensorView<const float, 3>& v) {
    if (seq < 0 || seq >= shape_.max_sequences || layer < 0 || layer >= shape_.layers)
      return Status::kErrorInvalidArgument;
    const std::int64_t n = k.shape[0], D = shape_.head_dim, Hkv = shape_.kv_heads;
    MEMATTN_RETURN_IF_ERROR(check_tensor(k, {-1, shape_.kv_heads, shape_.head_dim}));
    MEMATTN_RETURN_IF_ERROR(check_tensor(v, {n, shape_.kv_heads, shape_.head_dim}));
    if (n <= 0) return Status::kErrorInvalidShape;
    Segment& sg = segment(seq, layer);
    const std::int64_t len = len_[seq];
    if (sg.size != len) return Status::kErrorInvalidArgument;  // every layer appends a chunk once
    if (pending_[seq] != 0 && pending_[seq] != n) return Status::kErrorInvalidShape;
    if (len + n > shape_.max_tokens) return Status::kErrorCapacityExceeded;
    if (!storable<Half>(k) || !storable<Half>(v)) return Status::kErrorNonFinite;
    chunk_k_.resize(static_cast<std::size_t>(n * Hkv * D));
    chunk_v_.resize(chunk_k_.size());
    for (std::int64_t t = 0; t < n; ++t)
      for (std::int64_t h = 0; h < Hkv; ++h) {
        from_float_n(k.ptr(t, h), D, chunk_k_.data() + (t * Hkv + h) * D);
        from_float_n(v.ptr(t, h), D, chunk_v_.data() + (t * Hkv + h) * D);
      }
    if (sg.ring_k.empty()) {
      sg.ring_k.assign(static_cast<std::size_t>(ring_rows() * Hkv * D), Half{0});
      sg.ring_v = sg.ring_k;
      add_bytes(2 * sg.ring_k.size() * sizeof(Half));
    }
    return Status::kSuccess;
  }

  std::int64_t ring_rows() const { return cfg_.residual + cfg_.group; }
  std::int64_t ring_offset(std::int64_t pos, std::int64_t h) const {
    return ((pos % ring_rows()) * shape_.kv_heads + h) * shape_.head_dim;
  }
  Segment& segment(int seq, int layer) { return segments_[static_cast<std::size_t>(seq) * shape_.layers + layer]; }
  const Segment& segment(int seq, int layer) const {
    return segments_[static_cast<std::size_t>(seq) * shape_.layers + layer];
  }
  std::size_t lines_per_record() const { return layout_.bytes / sizeof(Line); }
  // The record spans lines_per_record() lines: addressed from the Line array, not one Line's member
  // (whose 16 bytes the compiler would take as the object's bounds).
  const std::uint8_t* record(const Segment& sg, std::int64_t j, std::int64_t h) const {
    return reinterpret_cast<const std::uint8_t*>(sg.blocks.data() + static_cast<std::size_t>(j * shape_.kv_heads + h) * lines_per_record());
  }
  std::uint8_t* record(Segment& sg, std::int64_t j, std::int64_t h) {
    return reinterpret_cast<std::uint8_t*>(sg.blocks.data() + static_cast<std::size_t>(j * shape_.kv_heads + h) * lines_per_record());
  }

  void add_bytes(std::size_t b) {
    bytes_ += b;
    peak_ = std::max(peak_, bytes_);
  }
  void set_block_capacity(Segment& sg, std::int64_t blocks) {
    if (blocks == sg.block_capacity) return;
    bytes_ -= sg.blocks.size() * sizeof(Line);
    sg.blocks.resize(static_cast<std::size_t>(blocks * shape_.kv_heads) * lines_per_record());
    sg.block_capacity = blocks;
    add_bytes(sg.blocks.size() * sizeof(Line));
  }

  // Quantises the blocks the canonical state of len + n tokens adds, then fills the ring.
  void append(Segment& sg, std::int64_t len, std::int64_t n) {
    const std::int64_t G = cfg_.group, D = shape_.head_dim, Hkv = shape_.kv_heads;
    const std::int64_t nq1 = quantized_for(len + n), j0 = sg.nq / G, j1 = nq1 / G;
    if (j1 > sg.block_capacity) {
      std::int64_t cap = std::max(j1, sg.block_capacity + sg.block_capacity / 2);
      cap = std::min(cap, quantized_for(shape_.max_tokens) / G);
      set_block_capacity(sg, cap);
    }
    auto row = [&](const std::vector<Half>& ring, const std::vector<Half>& chunk, std::int64_t pos, std::int64_t h) {
      return pos < len ? ring.data() + ring_offset(pos, h) : chunk.data() + ((pos - len) * Hkv + h) * D;
    };
    const std::size_t qfloats = (kivi_quant::scratch_bytes(cfg_) + sizeof(float) - 1) / sizeof(float);
    if (j1 > j0)
      for (auto& s : scratch_)
        if (s.buf.size() < qfloats) s.buf.resize(qfloats);
    executor_.for_each((j1 - j0) * Hkv, [&](std::int64_t task, int worker) {
      const std::int64_t j = j0 + task / Hkv, h = task % Hkv;
      const Half* kr[128];
      const Half* vr[128];
      for (std::int64_t t = 0; t < G; ++t) {
        kr[t] = row(sg.ring_k, chunk_k_, j * G + t, h);
        vr[t] = row(sg.ring_v, chunk_v_, j * G + t, h);
      }
      kivi_quant::quantize_block(cfg_, kr, vr, record(sg, j, h),
                                 reinterpret_cast<std::uint8_t*>(scratch_[static_cast<std::size_t>(worker)].buf.data()));
    });
    for (std::int64_t pos = std::max(len, nq1); pos < len + n; ++pos)
      for (std::int64_t h = 0; h < Hkv; ++h) {
        std::memcpy(sg.ring_k.data() + ring_offset(pos, h), chunk_k_.data() + ((pos - len) * Hkv + h) * D, D * sizeof(Half));
        std::memcpy(sg.ring_v.data() + ring_offset(pos, h), chunk_v_.data() + ((pos - len) * Hkv + h) * D, D * sizeof(Half));
      }
    sg.nq = nq1;
    sg.size = len + n;
  }

  using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  using Map = Eigen::Map<RowMatrix>;
  static constexpr std::int64_t kQueryBlock = 64;
  static constexpr std::int64_t kKeyTile = 64;
  static constexpr std::int64_t kQuantTile = 256;  // tokens of quantised blocks per product

  // Online-softmax state of `rows` query rows: running max m, sum l, output acc (rows x D).
  struct Softmax {
    float* m;
    float* l;
    float* alpha;
    std::int64_t rows;
    // S holds logits (rows x T, -inf = masked); turns them into probabilities and rescales acc.
    // Vectorised exp (Eigen); a NaN logit poisons its row (max and sum), masked entries are
    // exactly 0.
    void step(Map& S, Map& acc) const {
      constexpr float kNegInf = -std::numeric_limits<float>::infinity();
      for (std::int64_t r = 0; r < rows; ++r) {
        auto row = S.row(r).array();
        const float rmax = row.template maxCoeff<Eigen::PropagateNaN>();
        const float mx = std::isnan(rmax) || rmax > m[r] ? rmax : m[r];
        float a = 1.f, sum = 0.f;
        if (mx == kNegInf) {
          row.setZero();
        } else {
          a = std::exp(m[r] - mx);  // m = -inf: 0
          // Eigen vectorises exp but not select: the select only for rows with masked entries
          // (Eigen's exp of -inf is 0 only on some SIMD targets; 3e-39 on SSE2). The vector min
          // finds them; any() over the comparison was a scalar loop (half of this function).
          if (row.template minCoeff<Eigen::PropagateNumbers>() == kNegInf)
            row = (row == kNegInf).select(0.f, (row - mx).exp());
          else
            row = (row - mx).exp();
          sum = row.sum();
        }
        l[r] = l[r] * a + sum;
        m[r] = mx;
        alpha[r] = a;
        acc.row(r) *= a;
      }
    }
  };

  void attend_stored(const Segment& sg, std::int64_t len, TensorView<const float, 3> q, TensorView<float, 3> out) {
    const std::int64_t n = q.shape[0], D = shape_.head_dim, Hkv = shape_.kv_heads, g = shape_.q_heads / Hkv;
    const std::int64_t G = cfg_.group, GV = cfg_.vg(), nb = sg.nq / G, nr = len - sg.nq;
    const std::int64_t want = 4 * executor_.concurrency();
    std::int64_t qb = std::min<std::int64_t>(n, kQueryBlock);
    while (qb > 8 && Hkv * ((n + qb - 1) / qb) < want) qb /= 2;
    const std::int64_t nqb = (n + qb - 1) / qb;
    const std::int64_t max_rows = qb * g;
    // quantised blocks are dequantised kQuantTile tokens at a time (whole blocks)
    const std::int64_t TB = std::max<std::int64_t>(1, kQuantTile / G), tile = std::max<std::int64_t>({TB * G, kKeyTile, nr});
    // Per-worker scratch: Q, acc (rows x D), S (rows x tile), K/V tiles (tile x D), m, l, alpha
    // (rows), one block's V codes (G x D) and metadata (4 D + 2 G D/GV).
    const std::size_t need = static_cast<std::size_t>(2 * max_rows * D + max_rows * tile + 2 * tile * D + 3 * max_rows + G * D +
                                                      4 * D + 2 * G * (D / GV) + kivi_block::scratch_floats(cfg_));
    for (auto& s : scratch_)
      if (s.buf.size() < need) s.buf.resize(need);
    const float tau = 1.f / std::sqrt(static_cast<float>(D));
    const float ninf = -std::numeric_limits<float>::infinity();

    executor_.for_each(Hkv * nqb, [&](std::int64_t task, int worker) {
      const std::int64_t h = task / nqb, t0 = (task % nqb) * qb, t1 = std::min(n, t0 + qb), rows = (t1 - t0) * g;
      float* p = scratch_[static_cast<std::size_t>(worker)].buf.data();
      auto take = [&](std::int64_t count) {
        float* r = p;
        p += count;
        return r;
      };
      Map Q(take(rows * D), rows, D), acc(take(rows * D), rows, D);
      float* s_buf = take(rows * tile);
      float* k_buf = take(tile * D);
      float* v_buf = take(tile * D);
      Softmax sm{take(rows), take(rows), take(rows), rows};
      float* v_codes = take(G * D);
      float* meta = take(4 * D + 2 * G * (D / GV));
      float* fused_buf = take(kivi_block::scratch_floats(cfg_));
      for (std::int64_t i = t0; i < t1; ++i)
        for (std::int64_t gi = 0; gi < g; ++gi) {
          const float* src = q.ptr(i, h * g + gi);
          for (std::int64_t c = 0; c < D; ++c) Q((i - t0) * g + gi, c) = src[c] * tau;
        }
      acc.setZero();
      for (std::int64_t r = 0; r < rows; ++r) {
        sm.m[r] = ninf;
        sm.l[r] = 0;
      }

      // 1. Quantised blocks, TB at a time. Decode-sized row counts on AVX2 builds: logits and
      //    values straight from the codes (kivi_block_decode.hpp); otherwise the blocks are
      //    dequantised to fp32 (quant::decode per code) for one product for the tile's logits and
      //    one for its values (few, larger Eigen products: per 32-token block, expression overhead
      //    outweighed the math). One softmax step per tile either way.
      const bool fused = rows <= kivi_block::kMaxRows && kivi_block::available(cfg_);
      for (std::int64_t j0 = 0; j0 < nb; j0 += TB) {
        const std::int64_t T = std::min(TB, nb - j0) * G;
        Map K(k_buf, T, D), VT(v_buf, D, T), S(s_buf, rows, T);
        if (fused) {
          for (std::int64_t b = 0; b < T / G; ++b) {
            if (j0 + b + 1 < nb) kivi_block::prefetch(quant::BlockView{record(sg, j0 + b + 1, h), cfg_, layout_});
            kivi_block::scores(quant::BlockView{record(sg, j0 + b, h), cfg_, layout_}, Q.data(), static_cast<int>(rows), D,
                               s_buf + b * G, T, fused_buf);
          }
          sm.step(S, acc);
          for (std::int64_t b = 0; b < T / G; ++b)
            kivi_block::values(quant::BlockView{record(sg, j0 + b, h), cfg_, layout_}, s_buf + b * G, static_cast<int>(rows), T,
                               acc.data(), D, fused_buf);
          continue;
        }
        for (std::int64_t b = 0; b < T / G; ++b)
          dequant_block(quant::BlockView{record(sg, j0 + b, h), cfg_, layout_}, k_buf + b * G * D, v_buf + b * G, T, v_codes, meta);
        S.noalias() = Q * K.transpose();
        sm.step(S, acc);
        acc.noalias() += S * VT.transpose();
      }
      // 2. The ring (tokens [n_q, len)), exact fp16. Decode-sized row counts on AVX2 builds read
      //    its rows in place (dense_block_decode.hpp; at most two runs: the ring wraps).
      if (nr > 0 && rows <= dense_block::kMaxRows && dense_block::available<Half>(D)) {
        Map S(s_buf, rows, nr);
        const std::int64_t RR = ring_rows(), ld = Hkv * D;
        auto runs = [&](auto&& fn) {  // fn(first ring token t, its row offset, tokens in the run)
          for (std::int64_t t = 0, run = 0; t < nr; t += run) {
            const std::int64_t row = (sg.nq + t) % RR;
            run = std::min(nr - t, RR - row);
            fn(t, (row * Hkv + h) * D, static_cast<int>(run));
          }
        };
        runs([&](std::int64_t t, std::int64_t off, int run) {
          dense_block::scores(sg.ring_k.data() + off, ld, run, static_cast<int>(D), Q.data(), static_cast<int>(rows), D,
                              s_buf + t, nr);
        });
        sm.step(S, acc);
        runs([&](std::int64_t t, std::int64_t off, int run) {
          dense_block::values(sg.ring_v.data() + off, ld, run, static_cast<int>(D), s_buf + t, static_cast<int>(rows), nr,
                              acc.data(), D);
        });
      } else if (nr > 0) {
        Map K(k_buf, nr, D), V(v_buf, nr, D), S(s_buf, rows, nr);
        for (std::int64_t t = 0; t < nr; ++t) {
          to_float_n(sg.ring_k.data() + ring_offset(sg.nq + t, h), D, k_buf + t * D);
          to_float_n(sg.ring_v.data() + ring_offset(sg.nq + t, h), D, v_buf + t * D);
        }
        S.noalias() = Q * K.transpose();
        sm.step(S, acc);
        acc.noalias() += S * V;
      }
      // 3. The chunk's own tokens, causally (query i sees chunk tokens 0..i).
      for (std::int64_t c0 = 0; c0 < t1; c0 += kKeyTile) {
        const std::int64_t c1 = std::min(t1, c0 + kKeyTile), T = c1 - c0;
        Map K(k_buf, T, D), V(v_buf, T, D), S(s_buf, rows, T);
        for (std::int64_t t = c0; t < c1; ++t) {
          to_float_n(chunk_k_.data() + (t * Hkv + h) * D, D, k_buf + (t - c0) * D);
          to_float_n(chunk_v_.data() + (t * Hkv + h) * D, D, v_buf + (t - c0) * D);
        }
        S.noalias() = Q * K.transpose();
        for (std::int64_t i = t0; i < t1; ++i)
          for (std::int64_t t = std::max(c0, i + 1); t < c1; ++t)
            for (std::int64_t gi = 0; gi < g; ++gi) S((i - t0) * g + gi, t - c0) = ninf;
        sm.step(S, acc);
        acc.noalias() += S * V;
      }
      for (std::int64_t i = t0; i < t1; ++i)
        for (std::int64_t gi = 0; gi < g; ++gi) {
          const std::int64_t r = (i - t0) * g + gi;
          const float inv = 1.f / sm.l[r];
          float* dst = out.ptr(i, h * g + gi);
          for (std::int64_t c = 0; c < D; ++c) dst[c] = acc(r, c) * inv;
        }
    });
  }

  // One block's codes as fp32 values (code * scale + zero, quant::decode's exact product with
  // fp16 metadata): K token-major (G x D) at k; V channel-major at v (channel c's G tokens at
  // v + c * ldv, so a tile's blocks sit side by side). v_codes: G x D scratch (V's codes are
  // stored channel-major, quantisation spec 5.1).
  void dequant_block(const quant::BlockView& bv, float* k, float* v, std::int64_t ldv, float* v_codes, float* meta) const {
    const std::int64_t G = cfg_.group, D = cfg_.head_dim, GV = cfg_.vg(), J = D / GV;
    unpack_codes(bv.kc(), G * D, cfg_.bits_k, k);
    unpack_codes(bv.vc(), G * D, cfg_.bits_v, v_codes);
    // half2 {scale, zero} per K channel, then per (V channel group j, token t) at 2 (j G + t)
    to_float_n(reinterpret_cast<const Half*>(bv.rec + layout_.km), 2 * D, meta);
    to_float_n(reinterpret_cast<const Half*>(bv.rec + layout_.vm), 2 * G * J, meta + 2 * D);
    float *sk = meta + 2 * D + 2 * G * J, *zk = sk + D;
    for (std::int64_t c = 0; c < D; ++c) {
      sk[c] = meta[2 * c];
      zk[c] = meta[2 * c + 1];
    }
    for (std::int64_t t = 0; t < G; ++t)  // along rows: vectorised
      for (std::int64_t c = 0; c < D; ++c) k[t * D + c] = std::fma(k[t * D + c], sk[c], zk[c]);
    for (std::int64_t j = 0; j < J; ++j) {
      const float* vm = meta + 2 * D + 2 * j * G;
      for (std::int64_t c = j * GV; c < (j + 1) * GV; ++c)
        for (std::int64_t t = 0; t < G; ++t) v[c * ldv + t] = std::fma(v_codes[c * G + t], vm[2 * t], vm[2 * t + 1]);
    }
  }

  cache::CacheShape shape_;
  quant::KvQuantConfig cfg_;
  quant::BlockLayout layout_;
  Executor executor_;
  std::string spec_;
  std::vector<Segment> segments_;       // [seq][layer]
  std::vector<std::int64_t> len_;       // closed tokens per sequence
  std::vector<std::int64_t> pending_;   // tokens of the open chunk per sequence
  std::vector<Half> chunk_k_, chunk_v_; // the open chunk of the current attend() in fp16
  std::vector<Scratch> scratch_;        // one per worker
  std::size_t bytes_ = 0;
  std::size_t peak_ = 0;
};

}  // namespace cpu
MEMATTN_NAMESPACE_END
