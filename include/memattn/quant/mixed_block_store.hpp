// The Low tier of the MiKV mixed cache with per-channel key blocks (specs/quantization.md §8.2:
// "Lo: §5 block records, per-channel K by default"; `mikv:...,lowk=1`). Demoted tokens wait exact
// (fp16, keys balanced) in a staging area of fewer than G = 32 rows; every G of them become one
// block: K codes per channel over the block's G tokens (half2 scale/zero per channel), V codes per
// token in groups of head_dim/groups channels (half2 per group), with the quantiser of qmath.hpp
// (the one KIVI and the per-token pool use). Blocks hold non-contiguous tokens (positions are side
// data): outlier channels are a property of the channel, not of the position.
//
// Slots: s < blocks*G is row s % G of block s / G, the rest are staging rows. A quantised row never
// moves inside its block and is never requantised; eviction clears a live bit; reclaim() (at the end
// of a tier event) drops dead staging rows and whole dead blocks, renumbering the later slots (slot
// numbers are only held within one event). Same interface as MixedRowPool, plus the decode
// (logits, values) over its own format.
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "memattn/core/config.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/core/status.hpp"
#include "memattn/quant/mixed_format.hpp"
#include "memattn/quant/qmath.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace quant {

// uint32 words of n packed b-bit codes (qmath packing: 32/b codes per word, 10 at 3 bits).
inline std::size_t packed_words(std::int64_t n, int bits) {
  const std::int64_t per = 32 / bits;
  return static_cast<std::size_t>((n + per - 1) / per);
}

// Bytes of one token in a full block, side data included (position, state, live byte).
inline double mixed_block_token_bytes(const MixedRowConfig& c, std::size_t state_bytes, std::int64_t block = 32) {
  const double D = c.head_dim;
  return 4.0 * static_cast<double>(packed_words(block * c.head_dim, c.bits)) / static_cast<double>(block) +
         4.0 * D / static_cast<double>(block) + 4.0 * c.code_words() +
         4.0 * c.groups + sizeof(std::int32_t) + static_cast<double>(state_bytes) + 1.0;
}

// Codec: how blocks are quantised (quant::ScalarCodec, or cpu::quant_codes::Codec: same bits).
template <class State, class Codec = ScalarCodec>
class MixedBlockPool {
 public:
  static constexpr std::int64_t kBlock = 32;  // tokens per block (G)

  MixedBlockPool() = default;
  explicit MixedBlockPool(const MixedRowConfig& cfg)
      : cfg_(cfg),
        D_(cfg.head_dim),
        kwords_(packed_words(kBlock * cfg.head_dim, cfg.bits)),
        vwords_(static_cast<std::size_t>(cfg.code_words())) {}

  const MixedRowConfig& config() const { return cfg_; }
  std::int64_t slots() const { return blocks_ * kBlock + stage_; }
  std::int64_t live() const { return live_count_; }
  std::int64_t blocks() const { return blocks_; }
  std::int64_t staged() const { return stage_; }
  bool is_live(std::int64_t s) const { return live_[static_cast<std::size_t>(s)] != 0; }
  std::int32_t pos(std::int64_t s) const { return pos_[static_cast<std::size_t>(s)]; }
  const std::int32_t* positions() const { return pos_.data(); }
  State* state() { return state_.data(); }
  const State* state() const { return state_.data(); }

  // Stages (k_bal, v); the G-th staged row quantises the block. Returns the slot; QuantFlags in *flags.
  std::int64_t insert(const Half* k_bal, const Half* v, std::int32_t pos, State st, std::uint32_t* flags) {
    const std::size_t D = static_cast<std::size_t>(D_);
    if (ks_.empty()) {
      ks_.assign(static_cast<std::size_t>(kBlock) * D, Half{});
      vs_.assign(ks_.size(), Half{});
    }
    std::copy(k_bal, k_bal + D, ks_.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(stage_) * D));
    std::copy(v, v + D, vs_.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(stage_) * D));
    const std::int64_t s = slots();
    pos_.push_back(pos);
    state_.push_back(st);
    live_.push_back(1);
    ++live_count_;
    if (++stage_ == kBlock) *flags |= flush();
    return s;
  }

  void kill(std::int64_t s) {
    live_[static_cast<std::size_t>(s)] = 0;
    --live_count_;
  }

  // Drops dead staging rows and whole dead blocks (later slots move down).
  void reclaim() {
    const std::size_t D = static_cast<std::size_t>(D_), G = static_cast<std::size_t>(kBlock);
    std::size_t nb = 0, out = 0;  // kept blocks, kept side rows
    for (std::size_t b = 0; b < static_cast<std::size_t>(blocks_); ++b) {
      bool any = false;
      for (std::size_t t = 0; t < G; ++t) any = any || live_[b * G + t] != 0;
      if (!any) continue;
      if (nb != b) {
        std::copy_n(kc_.begin() + static_cast<std::ptrdiff_t>(b * kwords_), kwords_, kc_.begin() + static_cast<std::ptrdiff_t>(nb * kwords_));
        std::copy_n(km_.begin() + static_cast<std::ptrdiff_t>(b * 2 * D), 2 * D, km_.begin() + static_cast<std::ptrdiff_t>(nb * 2 * D));
        std::copy_n(vc_.begin() + static_cast<std::ptrdiff_t>(b * G * vwords_), G * vwords_, vc_.begin() + static_cast<std::ptrdiff_t>(nb * G * vwords_));
        const std::size_t vm = G * 2 * static_cast<std::size_t>(cfg_.groups);
        std::copy_n(vm_.begin() + static_cast<std::ptrdiff_t>(b * vm), vm, vm_.begin() + static_cast<std::ptrdiff_t>(nb * vm));
        move_side(b * G, nb * G, G);
      }
      ++nb;
      out += G;
    }
    std::size_t ns = 0;
    const std::size_t base = static_cast<std::size_t>(blocks_) * G;
    for (std::size_t i = 0; i < static_cast<std::size_t>(stage_); ++i) {
      if (live_[base + i] == 0) continue;
      if (ns != i) {
        std::copy_n(ks_.begin() + static_cast<std::ptrdiff_t>(i * D), D, ks_.begin() + static_cast<std::ptrdiff_t>(ns * D));
        std::copy_n(vs_.begin() + static_cast<std::ptrdiff_t>(i * D), D, vs_.begin() + static_cast<std::ptrdiff_t>(ns * D));
      }
      move_side(base + i, out + ns, 1);
      ++ns;
    }
    blocks_ = static_cast<std::int64_t>(nb);
    stage_ = static_cast<std::int64_t>(ns);
    resize_blocks();
    const std::size_t n = out + ns;
    pos_.resize(n);
    state_.resize(n);
    live_.resize(n);
    pos_.shrink_to_fit();
    state_.shrink_to_fit();
    live_.shrink_to_fit();
    if (stage_ == 0) release_staging();
  }

  std::size_t bytes() const {
    return kc_.capacity() * 4 + km_.capacity() * 2 + vc_.capacity() * 4 + vm_.capacity() * 2 +
           (ks_.capacity() + vs_.capacity()) * sizeof(Half) + pos_.capacity() * sizeof(std::int32_t) +
           state_.capacity() * sizeof(State) + live_.capacity();
  }

  // ---- decode (keys balanced: the caller passes q / b) ----
  static std::size_t scratch_elems(const MixedRowConfig& c) { return static_cast<std::size_t>(2 * kBlock * c.head_dim); }

  // S[r][s] = qb_r . k_s for every slot (row stride ld), dead slots -inf. qb: rows x D fp32.
  void logits(const float* qb, std::int64_t rows, float* S, std::int64_t ld, float* scratch) const {
    using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    const Eigen::Map<const Mat> Q(qb, rows, D_);
    float* kt = scratch;
    for (std::int64_t b = 0; b <= blocks_; ++b) {
      const std::int64_t T = b < blocks_ ? kBlock : stage_;
      if (T == 0) continue;
      if (b < blocks_) {
        block_keys(b, kt);
      } else {
        for (std::int64_t i = 0; i < T * D_; ++i) kt[i] = half_to_float(ks_[static_cast<std::size_t>(i)]);
      }
      Eigen::Map<Mat, 0, Eigen::OuterStride<>> St(S + b * kBlock, rows, T, Eigen::OuterStride<>(ld));
      St.noalias() = Q * Eigen::Map<const Mat>(kt, T, D_).transpose();
      for (std::int64_t t = 0; t < T; ++t)
        if (!is_live(b * kBlock + t)) St.col(t).setConstant(-std::numeric_limits<float>::infinity());
    }
  }

  // acc[r][:] += sum_s P[r][s] v_s (row stride ld of P; dead slots carry P = 0).
  void values(const float* P, std::int64_t ld, std::int64_t rows, float* acc, float* scratch) const {
    using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    Eigen::Map<Mat> A(acc, rows, D_);
    float* vt = scratch + kBlock * D_;
    for (std::int64_t b = 0; b <= blocks_; ++b) {
      const std::int64_t T = b < blocks_ ? kBlock : stage_;
      if (T == 0) continue;
      if (b < blocks_) {
        block_values(b, vt);
      } else {
        for (std::int64_t i = 0; i < T * D_; ++i) vt[i] = half_to_float(vs_[static_cast<std::size_t>(i)]);
      }
      const Eigen::Map<const Mat, 0, Eigen::OuterStride<>> Pt(P + b * kBlock, rows, T, Eigen::OuterStride<>(ld));
      A.noalias() += Pt * Eigen::Map<const Mat>(vt, T, D_);
    }
  }

  // Slot s as the attention sees it: balanced key and value, fp32 (tests, reports).
  void dequant(std::int64_t s, float* k, float* v) const {
    std::vector<float> kt(static_cast<std::size_t>(kBlock * D_)), vt(kt.size());
    const std::int64_t b = s / kBlock, t = s % kBlock;
    if (b < blocks_) {
      block_keys(b, kt.data());
      block_values(b, vt.data());
      std::copy_n(kt.data() + t * D_, D_, k);
      std::copy_n(vt.data() + t * D_, D_, v);
      return;
    }
    for (std::int64_t c = 0; c < D_; ++c) {
      k[c] = half_to_float(ks_[static_cast<std::size_t>(t * D_ + c)]);
      v[c] = half_to_float(vs_[static_cast<std::size_t>(t * D_ + c)]);
    }
  }
  // ---- raw arrays (device uploads, GPU tests; the CUDA decode's kernels::MikvLowBlocks reads them
  // as they are). Codes packed as qmath.hpp; meta as fp16 bits, {scale, zero} per pair.
  std::size_t key_words() const { return kwords_; }                    // K code words per block
  const std::uint32_t* key_codes() const { return kc_.data(); }        // [blocks][key_words]: element t*D + c
  const std::uint16_t* key_meta_bits() const { return km_.data(); }    // [blocks][D][2] per channel
  const std::uint32_t* value_codes() const { return vc_.data(); }      // [blocks*G][code_words]
  const std::uint16_t* value_meta_bits() const { return vm_.data(); }  // [blocks*G][groups][2] per V group
  const Half* staged_keys() const { return ks_.data(); }               // [staged][D] balanced fp16 (null when none)
  const Half* staged_values() const { return vs_.data(); }             // [staged][D]

  // Per-channel key meta of block b (tests: |k - k^| <= scale/2).
  GroupMeta key_meta(std::int64_t b, int c) const {
    const std::size_t o = static_cast<std::size_t>(b * 2 * D_ + 2 * c);
    return GroupMeta{Half{km_[o]}, Half{km_[o + 1]}};
  }

 private:
  // Quantises the G staged rows into block `blocks_`.
  std::uint32_t flush() {
    const std::size_t D = static_cast<std::size_t>(D_), G = static_cast<std::size_t>(kBlock);
    const int bits = cfg_.bits, groups = cfg_.groups, GV = static_cast<int>(D_) / groups;
    const std::size_t b = static_cast<std::size_t>(blocks_);
    ++blocks_;
    resize_blocks();
    std::uint32_t* kc = kc_.data() + b * kwords_;
    std::fill(kc, kc + kwords_, 0u);
    const Half* rows[kBlock];
    for (std::size_t t = 0; t < G; ++t) rows[t] = ks_.data() + t * D;
    std::uint32_t flags = Codec::channels(rows, static_cast<int>(kBlock), static_cast<int>(D_), bits, km_.data() + b * 2 * D, kc);
    for (std::size_t t = 0; t < G; ++t) {
      std::uint32_t* vc = vc_.data() + (b * G + t) * vwords_;
      std::fill(vc, vc + vwords_, 0u);
      flags |= Codec::tokens(vs_.data() + t * D, static_cast<int>(D_), GV, bits, vm_.data() + (b * G + t) * 2 * static_cast<std::size_t>(groups), vc);
    }
    stage_ = 0;
    release_staging();
    return flags;
  }
  void block_keys(std::int64_t b, float* kt) const {
    const std::uint32_t* kc = kc_.data() + static_cast<std::size_t>(b) * kwords_;
    for (std::int64_t c = 0; c < D_; ++c) {
      const GroupMeta m = key_meta(b, static_cast<int>(c));
      for (std::int64_t t = 0; t < kBlock; ++t) kt[t * D_ + c] = decode(unpack_code(kc, t * D_ + c, cfg_.bits), m);
    }
  }
  void block_values(std::int64_t b, float* vt) const {
    const int groups = cfg_.groups, GV = D_ / groups;
    for (std::int64_t t = 0; t < kBlock; ++t) {
      const std::size_t row = static_cast<std::size_t>(b * kBlock + t);
      const std::uint32_t* vc = vc_.data() + row * vwords_;
      const std::uint16_t* vm = vm_.data() + row * 2 * static_cast<std::size_t>(groups);
      for (int c = 0; c < D_; ++c) {
        const GroupMeta m{Half{vm[2 * (c / GV)]}, Half{vm[2 * (c / GV) + 1]}};
        vt[t * D_ + c] = decode(unpack_code(vc, c, cfg_.bits), m);
      }
    }
  }
  void move_side(std::size_t from, std::size_t to, std::size_t n) {
    std::copy_n(pos_.begin() + static_cast<std::ptrdiff_t>(from), n, pos_.begin() + static_cast<std::ptrdiff_t>(to));
    std::copy_n(state_.begin() + static_cast<std::ptrdiff_t>(from), n, state_.begin() + static_cast<std::ptrdiff_t>(to));
    std::copy_n(live_.begin() + static_cast<std::ptrdiff_t>(from), n, live_.begin() + static_cast<std::ptrdiff_t>(to));
  }
  void resize_blocks() {
    const std::size_t nb = static_cast<std::size_t>(blocks_), G = static_cast<std::size_t>(kBlock);
    kc_.resize(nb * kwords_);
    km_.resize(nb * 2 * static_cast<std::size_t>(D_));
    vc_.resize(nb * G * vwords_);
    vm_.resize(nb * G * 2 * static_cast<std::size_t>(cfg_.groups));
    for (auto* v : {&kc_, &vc_}) v->shrink_to_fit();
    for (auto* v : {&km_, &vm_}) v->shrink_to_fit();
  }
  void release_staging() {
    std::vector<Half>().swap(ks_);
    std::vector<Half>().swap(vs_);
  }

  MixedRowConfig cfg_{};
  int D_ = 0;
  std::size_t kwords_ = 0, vwords_ = 0;
  std::vector<std::uint32_t> kc_, vc_;  // [blocks][kwords], [blocks][G][vwords]
  std::vector<std::uint16_t> km_, vm_;  // [blocks][D] half2, [blocks][G][groups] half2
  std::vector<Half> ks_, vs_;           // staging [G][D] while rows are staged
  std::vector<std::int32_t> pos_;
  std::vector<State> state_;
  std::vector<std::uint8_t> live_;
  std::int64_t blocks_ = 0, stage_ = 0, live_count_ = 0;
};

}  // namespace quant
MEMATTN_NAMESPACE_END
