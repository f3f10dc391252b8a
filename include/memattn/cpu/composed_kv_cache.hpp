// The composed KV cache on the CPU (issue 7; spec eviction.md §2.9, §3.6; quantization.md KIVI):
// ComposedKvCache<Evict, Prune, Quant> (cache/compose.hpp), any component the identity. ThinK alone
// is ComposedKvCache<NoEvict, ThinK, NoQuant> ("think:prune=0.4").
//
// Segment = one (sequence, layer, KV head), slots in chronological order, three key regions:
//   [0, nq)             quantised (Quant = KIVI): blocks of <= G tokens, K codes per channel over
//                       the block's tokens with d_keep channels (fp16 scale/zero per channel)
//   [nq, nq + n_old)    old segment in fp16, d_keep channels (ThinK's pruned keys; with KIVI also
//                       the staging rows of the next block)
//   [.., N)             full-width tail in fp16: the newest r tokens and every token of the open
//                       chunk (r = ThinK `recent`, KIVI `residual`, the larger of the two when both)
// Values: per-token KIVI codes for [0, nq), fp16 rows after -- full width, except that ThinK's
// value extension (vprune > 0, prune/think.hpp; not with KIVI) keeps dv_keep channels of the old
// segment's values (a pruned channel contributes 0). Every region is compact (kept channels only
// + one uint8 channel list per segment and side), so bytes() shrink for real.
//
// attend(): the chunk is appended to the tail (K, V, pos, eviction state), then one softmax over
// all regions per query row: logits tau*[q[ch].K_qᵀ | q[ch].K_oldᵀ | q.K_tailᵀ] with tau = 1/sqrt(d)
// of the full d, causal inside the chunk; out = P.V. The eviction scorer's decode epilogue
// (H2O accumulation, Scissorhands history) reads the same probabilities, so scores of pruned or
// quantised tokens come from the attention that used them (§2.9).
// end_chunk(), per segment, in the order of §2.9:
//   1. eviction (trigger -> budget -> scores -> select_keep -> compaction of every region; quantised
//      codes move losslessly inside their block, a block never is requantised)
//   2. ThinK channel choice, once per segment, when the segment first holds more than r tokens:
//      qn from the last w queries (GQA mean, kept as squared sums while needed), kn over the
//      retained keys (vprune: value channels from the last w attention outputs' squares); the
//      window rings are freed afterwards
//   3. tail tokens older than the newest r move to the old segment (ThinK: kept channels only;
//      `migrate` = 0 does this only at the channel choice, as the reference prunes only the prompt)
//   4. KIVI: every G old rows become one quantised block (never requantised later)
// Window eviction scorers (SnapKV, PyramidKV) are not composed in this build (static_assert).
#pragma once

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "memattn/cache/compose.hpp"
#include "memattn/cache/kv_cache.hpp"
#include "memattn/core/executor.hpp"
#include "memattn/cpu/code_unpack.hpp"
#include "memattn/cpu/convert.hpp"
#include "memattn/cpu/dense_block_decode.hpp"
#include "memattn/cpu/evict_scores.hpp"
#include "memattn/cpu/evict_select.hpp"
#include "memattn/cpu/kivi_block_decode.hpp"
#include "memattn/cpu/kv_cache_helpers.hpp"
#include "memattn/cpu/quantize_codes.hpp"
#include "memattn/prune/think.hpp"
#include "memattn/quant/qmath.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {

template <class Evict, class Prune = prune::NoPrune, class Quant = quant::NoQuant>
class ComposedKvCache final : public cache::KvCache {
  using Traits = cache::Compose<Evict, Prune, Quant>;
  static_assert(!cache::EvictTraits<Evict>::kWindow,
                "window eviction scorers (SnapKV, PyramidKV) are not composed with pruning/quantisation in this build");

 public:
  static constexpr bool kEvicts = Traits::kEvicts;
  static constexpr bool kPrunes = Traits::kPrunes;
  static constexpr bool kQuant = Traits::kQuantizes;
  using State = std::conditional_t<Evict::kState == evict::StateKind::kU64, std::uint64_t, float>;
  static constexpr bool kHasState = kEvicts && Evict::kState != evict::StateKind::kNone;
  static constexpr std::int64_t kGranule = 16;  // rows per capacity step

  struct Config {
    typename Evict::Params evict{};
    typename Prune::Params prune{};
    quant::KvQuantConfig quant{};  // used when Quant is KiviQuant (head_dim is set from the shape)
    evict::GroupReduce reduce = evict::GroupReduce::kMean;  // GQA reduction of decode probabilities
  };

  static Status create(const cache::CacheShape& shape, const Config& config, const std::string& spec,
                       const Executor& executor, std::unique_ptr<ComposedKvCache>* out) {
    if (out == nullptr) return Status::kErrorNullPointer;
    MEMATTN_RETURN_IF_ERROR(cache::validate_shape(shape));
    if (shape.head_dim > prune::kMaxHeadDim) return Status::kErrorUnsupportedHeadDim;
    if constexpr (kEvicts) MEMATTN_RETURN_IF_ERROR(Evict::check(config.evict, shape.max_tokens));
    if constexpr (kPrunes) MEMATTN_RETURN_IF_ERROR(prune::check(config.prune, shape.head_dim));
    if constexpr (kPrunes && kQuant) {
      if (config.prune.vprune > 0.f) return Status::kErrorNotSupported;  // KIVI value groups span every channel
    }
    if constexpr (kQuant) {
      quant::KvQuantConfig q = config.quant;
      q.head_dim = shape.head_dim;  // V is full width; K uses the same group with d_keep channels
      MEMATTN_RETURN_IF_ERROR(q.validate());
    }
    out->reset(new ComposedKvCache(shape, config, spec, executor));
    return Status::kSuccess;
  }

  const char* spec() const override { return spec_.c_str(); }
  const cache::CacheShape& shape() const override { return shape_; }

  Status attend(int seq, int layer, TensorView<const float, 3> q, TensorView<const float, 3> k,
                TensorView<const float, 3> v, TensorView<float, 3> out) override {
    MEMATTN_RETURN_IF_ERROR(check_attend_args(shape_, seq, layer, q, k, v, out));
    const std::int64_t n = q.shape[0], Hkv = shape_.kv_heads, len = chunks_.len(seq);
    MEMATTN_RETURN_IF_ERROR(chunks_.check_step(seq, layer, n, shape_.max_tokens));
    if (!all_finite(q) || !storable<Half>(k) || !storable<Half>(v)) return Status::kErrorNonFinite;

    for (std::int64_t h = 0; h < Hkv; ++h) append_rows(segment(seq, layer, h), k, v, h, len, n);
    if constexpr (kPrunes) push_window(seq, layer, q);
    std::vector<Status> status(static_cast<std::size_t>(Hkv), Status::kSuccess);
    executor_.for_each(Hkv, [&](std::int64_t h, int worker) {
      status[static_cast<std::size_t>(h)] =
          attend_head(segment(seq, layer, h), q, out, h, n, workers_[static_cast<std::size_t>(worker)]);
    });
    if constexpr (kPrunes) {
      if (dv_keep_ < shape_.head_dim) push_out_window(seq, layer, out);
    }
    recount();
    for (Status s : status) MEMATTN_RETURN_IF_ERROR(s);
    chunks_.record(seq, layer, n);
    return Status::kSuccess;
  }

  Status end_chunk(int seq, const cache::ChunkSignals&) override {
    if (seq < 0 || seq >= shape_.max_sequences) return Status::kErrorInvalidArgument;
    if (!chunks_.complete(seq)) return Status::kErrorInvalidArgument;  // a layer was skipped
    chunks_.close(seq);
    const std::int64_t L = shape_.layers, Hkv = shape_.kv_heads;
    std::vector<Status> status(static_cast<std::size_t>(L * Hkv), Status::kSuccess);
    executor_.for_each(L * Hkv, [&](std::int64_t task, int worker) {
      status[static_cast<std::size_t>(task)] =
          settle(seq, static_cast<int>(task / Hkv), task % Hkv, workers_[static_cast<std::size_t>(worker)]);
    });
    if constexpr (kPrunes) {
      for (int l = 0; l < shape_.layers; ++l) {  // free the window once every head chose its channels
        bool all = true;
        for (int h = 0; h < shape_.kv_heads; ++h) all = all && !segment(seq, l, h).ch.empty();
        if (all) window(seq, l) = Window{};
      }
    }
    recount();
    for (Status s : status) MEMATTN_RETURN_IF_ERROR(s);
    return Status::kSuccess;
  }

  Status reset(int seq) override {
    if (seq < 0 || seq >= shape_.max_sequences) return Status::kErrorInvalidArgument;
    for (int l = 0; l < shape_.layers; ++l) {
      for (int h = 0; h < shape_.kv_heads; ++h) segment(seq, l, h) = Segment{};
      if constexpr (kPrunes) window(seq, l) = Window{};
    }
    chunks_.reset(seq);
    recount();
    return Status::kSuccess;
  }

  std::int64_t tokens(int seq) const override { return seq >= 0 && seq < shape_.max_sequences ? chunks_.len(seq) : 0; }
  std::size_t bytes() const override { return bytes_; }
  std::size_t peak_bytes() const override { return peak_; }

  // ---- inspection (tests, reports) ----
  std::int64_t d_keep() const { return d_keep_; }
  std::int64_t segment_size(int seq, int layer, int h) const { return segment(seq, layer, h).size(); }
  std::int64_t quantized_tokens(int seq, int layer, int h) const { return segment(seq, layer, h).nq; }
  std::int64_t old_tokens(int seq, int layer, int h) const { return segment(seq, layer, h).n_old; }
  std::int64_t tail_tokens(int seq, int layer, int h) const { return segment(seq, layer, h).n_tail; }
  const std::int32_t* segment_positions(int seq, int layer, int h) const { return segment(seq, layer, h).pos.data(); }
  std::int64_t dv_keep() const { return dv_keep_; }
  // Kept key channels (empty until chosen; identity 0..D-1 without pruning).
  std::vector<int> channels(int seq, int layer, int h) const {
    const Segment& sg = segment(seq, layer, h);
    std::vector<int> c;
    if (kPrunes && sg.ch.empty()) return c;
    for (std::int64_t i = 0; i < (kPrunes ? d_keep_ : shape_.head_dim); ++i) c.push_back(kPrunes ? sg.ch[i] : static_cast<int>(i));
    return c;
  }
  // Kept value channels of the old segment (empty: every channel, or not chosen yet).
  std::vector<int> value_channels(int seq, int layer, int h) const {
    const Segment& sg = segment(seq, layer, h);
    return std::vector<int>(sg.vch.begin(), sg.vch.end());
  }
  const State* segment_state(int seq, int layer, int h) const { return segment(seq, layer, h).state.data(); }
  // fp32 key / value of slot j as the attention sees it (dequantised; pruned keys: the kept
  // channels, in channel-list order). Returns the key width.
  std::int64_t key(int seq, int layer, int h, std::int64_t j, float* dst) const {
    const Segment& sg = segment(seq, layer, h);
    const std::int64_t D = shape_.head_dim;
    if (j >= sg.nq + sg.n_old) {
      to_float_n(sg.k_tail.data() + (j - sg.nq - sg.n_old) * D, D, dst);
      return D;
    }
    if (j >= sg.nq) {
      to_float_n(sg.k_old.data() + (j - sg.nq) * d_keep_, d_keep_, dst);
      return d_keep_;
    }
    std::int64_t b = 0, first = 0;
    while (first + sg.blocks[static_cast<std::size_t>(b)].n <= j) first += sg.blocks[static_cast<std::size_t>(b++)].n;
    const QBlock& blk = sg.blocks[static_cast<std::size_t>(b)];
    for (std::int64_t c = 0; c < d_keep_; ++c) dst[c] = k_code_value(blk, j - first, c);
    return d_keep_;
  }
  // Pruned value channels of old tokens read 0 (what the attention uses).
  void value(int seq, int layer, int h, std::int64_t j, float* dst) const {
    const Segment& sg = segment(seq, layer, h);
    if (j >= sg.nq + sg.n_old) {
      to_float_n(sg.v_tail.data() + (j - sg.nq - sg.n_old) * shape_.head_dim, shape_.head_dim, dst);
    } else if (j >= sg.nq) {
      old_value_row(sg, j - sg.nq, dst);
    } else {
      v_row_values(sg, j, dst);
    }
  }

  // Raw regions of a segment, in the layout the GPU decode reads (cuda/think.cuh: a device mirror
  // copies them as they are). Pointers are valid until the next attend / end_chunk / reset.
  struct Regions {
    std::int64_t nq = 0, n_old = 0, n_tail = 0;   // tokens per region
    std::int64_t d_keep = 0, dv_keep = 0;         // key width of the quantised/old regions; old value width
    std::int64_t k_block_words = 0;               // uint32 words of a full block's K codes (a device stride)
    std::int64_t v_words = 0, v_groups = 0;       // per quantised token: V code words, (scale, zero) pairs
    std::vector<std::int64_t> k_first;            // per block: its first token (eviction leaves blocks
                                                  // partly filled: block i holds tokens [k_first[i], k_first[i + 1]))
    std::vector<const std::uint32_t*> k_codes;    // per block: codes of (its t-th token, c) at t * d_keep + c
    std::vector<const std::uint16_t*> k_meta;     // per block: (scale, zero) fp16 bits per kept channel
    const std::uint32_t* v_codes = nullptr;       // [nq][v_words]
    const std::uint16_t* v_meta = nullptr;        // [nq][2 * v_groups]
    const Half* k_old = nullptr;                  // [n_old][d_keep]
    const Half* v_old = nullptr;                  // [n_old][dv_keep] (kept value channels: value_channels())
    const Half* k_tail = nullptr;                 // [n_tail][head_dim]
    const Half* v_tail = nullptr;                 // [n_tail][head_dim]
    // Words a block of `tokens` tokens holds (eviction shrinks a block's code array to its tokens).
    std::int64_t k_words(std::int64_t tokens) const { return (tokens * d_keep * bits_k + 31) / 32; }
    int bits_k = 0;
  };
  Regions regions(int seq, int layer, int h) const {
    const Segment& sg = segment(seq, layer, h);
    Regions r;
    r.nq = sg.nq, r.n_old = sg.n_old, r.n_tail = sg.n_tail;
    r.d_keep = d_keep_;
    r.dv_keep = sg.vch.empty() ? shape_.head_dim : dv_keep_;
    if constexpr (kQuant) {
      r.bits_k = cfg_.quant.bits_k;
      r.k_block_words = r.k_words(cfg_.quant.group);
      r.v_words = v_words_, r.v_groups = v_groups_;
    }
    std::int64_t first = 0;
    for (const QBlock& b : sg.blocks) {
      r.k_first.push_back(first);
      first += b.n;
      r.k_codes.push_back(b.kc.data());
      r.k_meta.push_back(b.km.data());
    }
    r.v_codes = sg.vq.data(), r.v_meta = sg.vqm.data();
    r.k_old = sg.k_old.data(), r.v_old = sg.v_old.data(), r.k_tail = sg.k_tail.data(), r.v_tail = sg.v_tail.data();
    return r;
  }

 private:
  struct QBlock {  // <= G tokens: K codes token-major (t*d_keep + c), meta half2{scale, zero} per channel
    std::int64_t n = 0;
    std::vector<std::uint32_t> kc;
    std::vector<std::uint16_t> km;
    std::size_t bytes() const { return kc.capacity() * 4 + km.capacity() * 2; }
  };
  struct Segment {
    std::vector<QBlock> blocks;
    std::vector<std::uint32_t> vq;   // [nq][v_words] per-token V codes
    std::vector<std::uint16_t> vqm;  // [nq][2 * D/G_V] per-token V meta
    std::vector<Half> k_old;         // [n_old][d_keep]
    std::vector<Half> k_tail;        // [n_tail][D]
    std::vector<Half> v_old;         // [n_old][dv_keep]
    std::vector<Half> v_tail;        // [n_tail][D]
    std::vector<std::int32_t> pos;   // [N] original positions (eviction only)
    std::vector<State> state;        // [N] (eviction scorer state)
    std::vector<std::uint8_t> ch;    // kept key channels, ascending (ThinK; empty until chosen)
    std::vector<std::uint8_t> vch;   // kept value channels, ascending (vprune > 0; empty until chosen)
    std::int64_t nq = 0, n_old = 0, n_tail = 0;
    bool pruned_once = false;
    std::int64_t size() const { return nq + n_old + n_tail; }
    std::size_t bytes() const {
      std::size_t b = vq.capacity() * 4 + vqm.capacity() * 2 +
                      (k_old.capacity() + k_tail.capacity() + v_old.capacity() + v_tail.capacity()) * 2 +
                      pos.capacity() * 4 + state.capacity() * sizeof(State) + ch.capacity() + vch.capacity() +
                      blocks.capacity() * sizeof(QBlock);
      for (const QBlock& q : blocks) b += q.bytes();
      return b;
    }
  };
  struct Ring {  // squared channels of the last w tokens, GQA-summed: [w][Hkv][D] fp32
    std::vector<float> sq;
    std::int64_t count = 0, head = 0;
  };
  struct Window {  // ThinK: the window queries (keys' scores) and, with vprune, their attention outputs
    Ring q, o;
    std::size_t bytes() const { return (q.sq.capacity() + o.sq.capacity()) * sizeof(float); }
  };
  struct Worker {
    std::vector<float> kq, kt, vv, s, qr, qc, tmp, meta;
    std::vector<float> fused, vmeta;  // kivi_block scratch; per-group value metadata of a token tile
    std::vector<float> pbar;          // GQA-reduced probabilities of one query token
    std::vector<double> acc;
    std::vector<std::uint64_t> keys;
    std::vector<std::int32_t> keep;
    std::vector<float> scores;
  };

  ComposedKvCache(const cache::CacheShape& shape, const Config& config, const std::string& spec, const Executor& executor)
      : shape_(shape),
        cfg_(config),
        executor_(executor),
        spec_(spec),
        segments_(static_cast<std::size_t>(shape.max_sequences) * shape.layers * shape.kv_heads),
        windows_(kPrunes ? static_cast<std::size_t>(shape.max_sequences) * shape.layers : 0),
        chunks_(shape.max_sequences, shape.layers),
        workers_(static_cast<std::size_t>(executor.concurrency())) {
    d_keep_ = shape.head_dim;
    dv_keep_ = shape.head_dim;
    if constexpr (kPrunes) {
      d_keep_ = prune::keep_count(shape.head_dim, config.prune.prune, config.prune.granularity);
      if (config.prune.vprune > 0.f)
        dv_keep_ = prune::keep_count(shape.head_dim, config.prune.vprune, config.prune.granularity);
    }
    cfg_.quant.head_dim = shape.head_dim;
    if constexpr (kPrunes && kQuant) {  // ThinK_kivi: KIVI's exact residual is the full-width tail too
      tail_keep_ = std::max<std::int64_t>(config.prune.recent, config.quant.residual);
    } else if constexpr (kPrunes) {
      tail_keep_ = config.prune.recent;
    } else if constexpr (kQuant) {
      tail_keep_ = config.quant.residual;
    } else {
      tail_keep_ = std::numeric_limits<std::int64_t>::max();
    }
    if constexpr (kQuant) {
      v_words_ = (shape.head_dim * cfg_.quant.bits_v + 31) / 32;
      v_groups_ = shape.head_dim / cfg_.quant.vg();
    }
  }

  Segment& segment(int seq, int layer, std::int64_t h) {
    return segments_[(static_cast<std::size_t>(seq) * shape_.layers + layer) * shape_.kv_heads + static_cast<std::size_t>(h)];
  }
  const Segment& segment(int seq, int layer, std::int64_t h) const {
    return segments_[(static_cast<std::size_t>(seq) * shape_.layers + layer) * shape_.kv_heads + static_cast<std::size_t>(h)];
  }
  Window& window(int seq, int layer) { return windows_[static_cast<std::size_t>(seq) * shape_.layers + layer]; }

  // Real allocation tracks the size: capacity in granules, returned when far above the need.
  template <class V>
  static void fit(V& vec, std::int64_t rows, std::int64_t row) {
    const std::size_t need = static_cast<std::size_t>(rows * row);
    const std::size_t cap = static_cast<std::size_t>((rows + kGranule - 1) / kGranule * kGranule * row);
    if (vec.capacity() < need || vec.capacity() > cap + static_cast<std::size_t>(2 * kGranule * row)) {
      V fresh;
      fresh.reserve(std::max(cap, need));
      fresh.assign(vec.begin(), vec.begin() + static_cast<std::ptrdiff_t>(std::min(vec.size(), need)));
      vec.swap(fresh);
    }
    vec.resize(need);
  }

  void recount() {
    std::size_t b = 0;
    for (const Segment& s : segments_) b += s.bytes();
    for (const Window& w : windows_) b += w.bytes();
    bytes_ = b;
    peak_ = std::max(peak_, bytes_);
  }

  void append_rows(Segment& sg, const TensorView<const float, 3>& k, const TensorView<const float, 3>& v, std::int64_t h,
                   std::int64_t len, std::int64_t n) {
    const std::int64_t D = shape_.head_dim, N = sg.size(), t0 = sg.n_tail;
    fit(sg.k_tail, t0 + n, D);
    fit(sg.v_tail, t0 + n, D);
    if constexpr (kEvicts) fit(sg.pos, N + n, 1);  // positions only serve eviction (protection, ties)
    (void)len;
    if constexpr (kHasState) fit(sg.state, N + n, 1);
    for (std::int64_t t = 0; t < n; ++t) {
      from_float_n(k.ptr(t, h), D, sg.k_tail.data() + (t0 + t) * D);
      from_float_n(v.ptr(t, h), D, sg.v_tail.data() + (t0 + t) * D);
      if constexpr (kEvicts) sg.pos[static_cast<std::size_t>(N + t)] = static_cast<std::int32_t>(len + t);
      if constexpr (kHasState) {
        // the policy sees the stored (fp16) key, as the attention does
        float kr[prune::kMaxHeadDim];
        to_float_n(sg.k_tail.data() + (t0 + t) * D, D, kr);
        Evict::init_token(sg.state.data(), N + t, kr, static_cast<int>(D));
      }
    }
    sg.n_tail += n;
  }

  // Squares of the last w rows of q (queries) or out (attention outputs) into a window ring, while
  // some head of the layer has not chosen its channels yet.
  template <class T>
  void push_ring(int seq, int layer, Ring& ring, const TensorView<T, 3>& x) {
    bool need = false;
    for (int h = 0; h < shape_.kv_heads; ++h) need = need || segment(seq, layer, h).ch.empty();
    if (!need) return;
    const std::int64_t W = cfg_.prune.window, Hkv = shape_.kv_heads, D = shape_.head_dim, G = shape_.q_heads / Hkv;
    if (ring.sq.empty()) ring.sq.assign(static_cast<std::size_t>(W * Hkv * D), 0.f);
    for (std::int64_t t = std::max<std::int64_t>(0, x.shape[0] - W); t < x.shape[0]; ++t) {
      float* row = ring.sq.data() + ring.head * Hkv * D;
      for (std::int64_t h = 0; h < Hkv; ++h) {
        double acc[prune::kMaxHeadDim] = {};
        prune::accumulate_sq(x.ptr(t, h * G), x.stride[1], static_cast<int>(G), static_cast<int>(D), acc);
        for (std::int64_t c = 0; c < D; ++c) row[h * D + c] = static_cast<float>(acc[c]);
      }
      ring.head = (ring.head + 1) % W;
      ring.count = std::min(ring.count + 1, W);
    }
  }
  void push_window(int seq, int layer, const TensorView<const float, 3>& q) { push_ring(seq, layer, window(seq, layer).q, q); }
  void push_out_window(int seq, int layer, const TensorView<float, 3>& out) { push_ring(seq, layer, window(seq, layer).o, out); }

  // fp32 value row i of the old segment, D wide (pruned value channels 0).
  void old_value_row(const Segment& sg, std::int64_t i, float* dst) const {
    const std::int64_t D = shape_.head_dim;
    if (sg.vch.empty()) {
      to_float_n(sg.v_old.data() + i * D, D, dst);
      return;
    }
    std::fill(dst, dst + D, 0.f);
    const Half* src = sg.v_old.data() + i * dv_keep_;
    for (std::int64_t c = 0; c < dv_keep_; ++c) dst[sg.vch[static_cast<std::size_t>(c)]] = half_to_float(src[c]);
  }

  // ---- quantised region helpers (qmath packing; codes are never requantised) ----
  float k_code_value(const QBlock& b, std::int64_t t, std::int64_t c) const {
    const quant::GroupMeta m{Half{b.km[static_cast<std::size_t>(2 * c)]}, Half{b.km[static_cast<std::size_t>(2 * c + 1)]}};
    return quant::decode(quant::unpack_code(b.kc.data(), t * d_keep_ + c, cfg_.quant.bits_k), m);
  }
  void v_row_values(const Segment& sg, std::int64_t j, float* dst) const {
    const std::int64_t D = shape_.head_dim, GV = cfg_.quant.vg();
    const std::uint16_t* m = sg.vqm.data() + j * 2 * v_groups_;
    unpack_codes(sg.vq.data() + j * v_words_, D, cfg_.quant.bits_v, dst);
    for (std::int64_t g = 0; g < v_groups_; ++g) {  // == quant::decode(code, meta) per value
      const float sc = half_to_float(Half{m[2 * g]}), z = half_to_float(Half{m[2 * g + 1]});
      for (std::int64_t c = g * GV; c < (g + 1) * GV; ++c) dst[c] = std::fma(dst[c], sc, z);
    }
  }
  // Quantises the first G old rows (keys d_keep wide, values D wide) into one block, through the
  // vector quantiser on AVX2 builds (quantize_codes.hpp; the same bits as the scalar one).
  void quantize_front(Segment& sg) {
    const std::int64_t G = cfg_.quant.group, D = shape_.head_dim, dk = d_keep_, GV = cfg_.quant.vg();
    QBlock b;
    b.n = G;
    b.kc.assign(static_cast<std::size_t>((G * dk * cfg_.quant.bits_k + 31) / 32), 0u);
    b.km.resize(static_cast<std::size_t>(2 * dk));
    std::vector<const Half*> rows(static_cast<std::size_t>(G));
    for (std::int64_t t = 0; t < G; ++t) rows[static_cast<std::size_t>(t)] = sg.k_old.data() + t * dk;
    quant_codes::Codec::channels(rows.data(), static_cast<int>(G), static_cast<int>(dk), cfg_.quant.bits_k, b.km.data(), b.kc.data());
    fit(sg.vq, sg.nq + G, v_words_);
    fit(sg.vqm, sg.nq + G, 2 * v_groups_);
    for (std::int64_t t = 0; t < G; ++t) {
      std::uint32_t* w = sg.vq.data() + (sg.nq + t) * v_words_;
      std::fill(w, w + v_words_, 0u);
      // full width: vprune does not compose with KIVI
      quant_codes::Codec::tokens(sg.v_old.data() + t * D, static_cast<int>(D), static_cast<int>(GV), cfg_.quant.bits_v,
                                 sg.vqm.data() + (sg.nq + t) * 2 * v_groups_, w);
    }
    sg.blocks.push_back(std::move(b));
    // drop the G rows from the fp16 old keys and values
    std::memmove(sg.k_old.data(), sg.k_old.data() + G * dk, static_cast<std::size_t>((sg.n_old - G) * dk) * sizeof(Half));
    std::memmove(sg.v_old.data(), sg.v_old.data() + G * D, static_cast<std::size_t>((sg.n_old - G) * D) * sizeof(Half));
    sg.nq += G;
    sg.n_old -= G;
    fit(sg.k_old, sg.n_old, dk);
    fit(sg.v_old, sg.n_old, D);
  }

  // ---- attention over all regions: one softmax per query row ----
  Status attend_head(Segment& sg, const TensorView<const float, 3>& q, const TensorView<float, 3>& out, std::int64_t h,
                     std::int64_t n, Worker& w) {
    const std::int64_t D = shape_.head_dim, G = shape_.q_heads / shape_.kv_heads, dk = d_keep_;
    const std::int64_t nk = sg.nq + sg.n_old, N = sg.size(), N0 = N - n;  // N0: slots before the chunk
    const bool pruned = kPrunes && !sg.ch.empty();
    const std::int64_t kw = dk;  // width of the quantised/old keys (no old keys exist before the channel choice)
    const std::int64_t ldqc = (kw + 7) / 8 * 8;  // pruned query rows, zero-padded to whole vectors
    // Decode-sized row counts on AVX2 builds read every region where it is stored: the KIVI blocks
    // from their codes (kivi_block_decode.hpp: scales folded, codes unpacked in registers), the
    // fp16 rows directly (dense_block_decode.hpp). Otherwise (prefill, portable builds, pruned value
    // channels) every region is copied to fp32 once per call and the query blocks below share them.
    constexpr std::int64_t kBlock = 32;  // query tokens per block
    const std::int64_t rows_max = std::min(n, kBlock) * G;
    const bool fused = kQuant && sg.nq > 0 && rows_max <= kivi_block::kMaxRows && kivi_block::available(cfg_.quant);
    const bool direct = rows_max <= dense_block::kMaxRows && dense_block::available<Half>(D) && dv_keep_ == D &&
                        (!kQuant || sg.nq == 0 || fused);
    if (fused) {
      w.fused.resize(static_cast<std::size_t>(kivi_block::scratch_floats(cfg_.quant)));
      w.vmeta.resize(static_cast<std::size_t>(2 * v_groups_ * kivi_block::kTokenTile));
    }
    if (!direct) {
      w.kq.resize(static_cast<std::size_t>(nk * kw));
      w.kt.resize(static_cast<std::size_t>(sg.n_tail * D));
      w.vv.resize(static_cast<std::size_t>(N * D));
      std::int64_t j = 0;
      w.meta.resize(static_cast<std::size_t>(2 * kw));
      float *sc = w.meta.data(), *z = sc + kw;
      for (const QBlock& b : sg.blocks) {  // codes unpacked in bulk, then code * scale + zero along each row
        if (fused) break;
        float* dst = w.kq.data() + j * kw;
        unpack_codes(b.kc.data(), b.n * kw, cfg_.quant.bits_k, dst);
        for (std::int64_t c = 0; c < kw; ++c) {
          sc[c] = half_to_float(Half{b.km[static_cast<std::size_t>(2 * c)]});
          z[c] = half_to_float(Half{b.km[static_cast<std::size_t>(2 * c + 1)]});
        }
        for (std::int64_t t = 0; t < b.n; ++t)
          for (std::int64_t c = 0; c < kw; ++c) dst[t * kw + c] = std::fma(dst[t * kw + c], sc[c], z[c]);
        j += b.n;
      }
      if (sg.n_old > 0) to_float_n(sg.k_old.data(), sg.n_old * kw, w.kq.data() + sg.nq * kw);
      to_float_n(sg.k_tail.data(), sg.n_tail * D, w.kt.data());
      for (std::int64_t i = 0; i < sg.nq && !fused; ++i) v_row_values(sg, i, w.vv.data() + i * D);
      for (std::int64_t i = 0; i < sg.n_old; ++i) old_value_row(sg, i, w.vv.data() + (sg.nq + i) * D);
      to_float_n(sg.v_tail.data(), sg.n_tail * D, w.vv.data() + (sg.nq + sg.n_old) * D);
    }

    using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using Map = Eigen::Map<RowMatrix>;
    const float tau = 1.f / std::sqrt(static_cast<float>(D));  // of the full d (§3.6)
    w.qr.resize(static_cast<std::size_t>(rows_max * D));
    w.qc.assign(static_cast<std::size_t>(rows_max * ldqc), 0.f);
    w.s.resize(static_cast<std::size_t>(rows_max * N));
    w.tmp.resize(static_cast<std::size_t>(rows_max * D));
    Map Kq(w.kq.data(), direct ? 0 : nk, kw), Kt(w.kt.data(), direct ? 0 : sg.n_tail, D), V(w.vv.data(), direct ? 0 : N, D);
    for (std::int64_t t0 = 0; t0 < n; t0 += kBlock) {
      const std::int64_t t1 = std::min(n, t0 + kBlock), rows = (t1 - t0) * G, vis = N0 + t1;
      Map Q(w.qr.data(), rows, D), S(w.s.data(), rows, vis), O(w.tmp.data(), rows, D);
      Eigen::Map<RowMatrix, 0, Eigen::OuterStride<>> Qc(w.qc.data(), rows, kw, Eigen::OuterStride<>(ldqc));
      for (std::int64_t t = t0; t < t1; ++t)
        for (std::int64_t g = 0; g < G; ++g) {
          const float* src = q.ptr(t, h * G + g);
          const std::int64_t r = (t - t0) * G + g;
          for (std::int64_t c = 0; c < D; ++c) Q(r, c) = src[c] * tau;
          for (std::int64_t c = 0; c < kw; ++c) Qc(r, c) = pruned ? Q(r, sg.ch[static_cast<std::size_t>(c)]) : Q(r, c);
        }
      if (fused) {
        std::int64_t first = 0;
        for (const QBlock& b : sg.blocks) {
          kivi_block::scores_codes(b.kc.data(), static_cast<std::int64_t>(b.kc.size() * 4), b.km.data(), static_cast<int>(b.n),
                                   static_cast<int>(kw), cfg_.quant.bits_k,
                                   Qc.data(), static_cast<int>(rows), ldqc, S.data() + first, vis, w.fused.data());
          first += b.n;
        }
      }
      if (direct) {
        if (sg.n_old > 0)
          dense_block::scores(sg.k_old.data(), kw, static_cast<int>(sg.n_old), static_cast<int>(kw), Qc.data(),
                              static_cast<int>(rows), ldqc, S.data() + sg.nq, vis);
        dense_block::scores(sg.k_tail.data(), D, static_cast<int>(vis - nk), static_cast<int>(D), Q.data(),
                            static_cast<int>(rows), D, S.data() + nk, vis);
      } else {
        if (fused) {
          if (sg.n_old > 0) S.middleCols(sg.nq, sg.n_old).noalias() = Qc * Kq.middleRows(sg.nq, sg.n_old).transpose();
        } else if (nk > 0) {
          S.leftCols(nk).noalias() = Qc * Kq.transpose();
        }
        S.rightCols(vis - nk).noalias() = Q * Kt.topRows(vis - nk).transpose();
      }
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int64_t t = t0 + r / G, hi = N0 + t + 1;  // causal: slots [0, hi)
        auto row = S.row(r);
        const float mx = row.head(hi).maxCoeff();
        row.head(hi) = (row.head(hi).array() - mx).exp().matrix();
        row.tail(vis - hi).setZero();
        row /= row.head(hi).sum();
      }
      if (direct) {
        O.setZero();
        if (sg.n_old > 0)
          dense_block::values(sg.v_old.data(), D, static_cast<int>(sg.n_old), static_cast<int>(D), S.data() + sg.nq,
                              static_cast<int>(rows), vis, O.data(), D);
        dense_block::values(sg.v_tail.data(), D, static_cast<int>(vis - nk), static_cast<int>(D), S.data() + nk,
                            static_cast<int>(rows), vis, O.data(), D);
        if (fused) attend_quantised_values(sg, S, rows, vis, O.data(), w);
      } else if (fused) {
        O.noalias() = S.rightCols(vis - sg.nq) * V.middleRows(sg.nq, vis - sg.nq);
        attend_quantised_values(sg, S, rows, vis, O.data(), w);
      } else {
        O.noalias() = S * V.topRows(vis);
      }
      for (std::int64_t t = t0; t < t1; ++t)
        for (std::int64_t g = 0; g < G; ++g)
          std::memcpy(out.ptr(t, h * G + g), O.row((t - t0) * G + g).data(), static_cast<std::size_t>(D) * sizeof(float));
      if constexpr (kEvicts && cache::EvictTraits<Evict>::kDecodeProbs) {
        w.pbar.resize(static_cast<std::size_t>(vis));
        for (std::int64_t t = t0; t < t1; ++t) {
          const std::int64_t hi = N0 + t + 1;
          group_reduce_rows(S.data() + (t - t0) * G * vis, vis, G, hi, cfg_.reduce, w.pbar.data());
          for (std::int64_t c = 0; c < hi; ++c)
            Evict::on_decode_prob(cfg_.evict, sg.state.data(), c, w.pbar[static_cast<std::size_t>(c)], hi);
        }
      }
    }
    return Status::kSuccess;
  }

  // O += P V over the quantised rows, straight from their per-token codes, kTokenTile tokens at a
  // time (each tile's value metadata transposed to per-group float rows for the folding).
  template <class SMap>
  void attend_quantised_values(const Segment& sg, const SMap& S, std::int64_t rows, std::int64_t ld, float* O, Worker& w) const {
    const std::int64_t D = shape_.head_dim, J = v_groups_, T = kivi_block::kTokenTile;
    float *sc = w.vmeta.data(), *ze = sc + J * T;
    for (std::int64_t t0 = 0; t0 < sg.nq; t0 += T) {
      const std::int64_t nt = std::min(T, sg.nq - t0);
      kivi_block::transpose_meta(sg.vqm.data() + t0 * 2 * J, static_cast<std::size_t>(2 * J), nt, J, sc, ze, T);
      kivi_block::values_tokens(sg.vq.data() + t0 * v_words_, v_words_, static_cast<int>(nt), static_cast<int>(D),
                                cfg_.quant.vg(), cfg_.quant.bits_v, sc, ze, T, S.data() + t0, static_cast<int>(rows), ld, O, D,
                                w.fused.data());
    }
  }

  // ---- end of chunk, one segment: evict -> choose channels -> migrate -> quantise ----
  Status settle(int seq, int layer, std::int64_t h, Worker& w) {
    Segment& sg = segment(seq, layer, h);
    if constexpr (kEvicts) MEMATTN_RETURN_IF_ERROR(evict_segment(sg, layer, chunks_.len(seq), w));
    if constexpr (kPrunes) {
      if (sg.ch.empty() && sg.n_tail > tail_keep_) MEMATTN_RETURN_IF_ERROR(choose_channels(sg, seq, layer, h, w));
      if (sg.ch.empty()) return Status::kSuccess;  // nothing pruned yet
      if (!cfg_.prune.migrate && sg.pruned_once) return Status::kSuccess;
    }
    if (sg.n_tail > tail_keep_) migrate(sg, sg.n_tail - tail_keep_);
    if constexpr (kPrunes) sg.pruned_once = true;
    if constexpr (kQuant)
      while (sg.n_old >= cfg_.quant.group) quantize_front(sg);
    return Status::kSuccess;
  }

  Status choose_channels(Segment& sg, int seq, int layer, std::int64_t h, Worker& w) {
    const std::int64_t D = shape_.head_dim;
    const Window& win = window(seq, layer);
    double qsq[prune::kMaxHeadDim] = {}, ksq[prune::kMaxHeadDim] = {};
    for (std::int64_t i = 0; i < win.q.count; ++i)
      for (std::int64_t c = 0; c < D; ++c) qsq[c] += win.q.sq[static_cast<std::size_t>((i * shape_.kv_heads + h) * D + c)];
    // retained keys: all full width at this point (channels are chosen before anything is pruned)
    for (std::int64_t j = 0; j < sg.n_tail; ++j)
      for (std::int64_t c = 0; c < D; ++c) {
        const double x = half_to_float(sg.k_tail[static_cast<std::size_t>(j * D + c)]);
        ksq[c] += x * x;
      }
    float score[prune::kMaxHeadDim];
    const std::int64_t G = shape_.q_heads / shape_.kv_heads;
    prune::channel_scores(qsq, win.q.count * G, ksq, sg.n_tail, static_cast<int>(D), score);
    w.keys.resize(static_cast<std::size_t>(D));
    if (dv_keep_ < D) {  // value extension: vscore[c] = mean over the window outputs of O[c]^2
      float vscore[prune::kMaxHeadDim];
      for (std::int64_t c = 0; c < D; ++c) {
        double acc = 0;
        for (std::int64_t i = 0; i < win.o.count; ++i) acc += win.o.sq[static_cast<std::size_t>((i * shape_.kv_heads + h) * D + c)];
        vscore[c] = static_cast<float>(win.o.count > 0 ? acc / static_cast<double>(win.o.count * G) : 0.0);
      }
      sg.vch.resize(static_cast<std::size_t>(dv_keep_));
      sg.vch.shrink_to_fit();
      MEMATTN_RETURN_IF_ERROR(
          prune::select_channels(vscore, static_cast<int>(D), static_cast<int>(dv_keep_), w.keys.data(), sg.vch.data()));
    }
    sg.ch.resize(static_cast<std::size_t>(d_keep_));
    sg.ch.shrink_to_fit();
    return prune::select_channels(score, static_cast<int>(D), static_cast<int>(d_keep_), w.keys.data(), sg.ch.data());
  }

  // Moves the oldest m tail rows to the old segment (kept key / value channels only).
  void migrate(Segment& sg, std::int64_t m) {
    const std::int64_t D = shape_.head_dim, dk = d_keep_, dvk = dv_keep_;
    fit(sg.k_old, sg.n_old + m, dk);
    fit(sg.v_old, sg.n_old + m, dvk);
    for (std::int64_t t = 0; t < m; ++t) {
      const Half* src = sg.k_tail.data() + t * D;
      Half* dst = sg.k_old.data() + (sg.n_old + t) * dk;
      for (std::int64_t c = 0; c < dk; ++c) dst[c] = kPrunes ? src[sg.ch[static_cast<std::size_t>(c)]] : src[c];
      const Half* vsrc = sg.v_tail.data() + t * D;
      Half* vdst = sg.v_old.data() + (sg.n_old + t) * dvk;
      for (std::int64_t c = 0; c < dvk; ++c) vdst[c] = sg.vch.empty() ? vsrc[c] : vsrc[sg.vch[static_cast<std::size_t>(c)]];
    }
    std::memmove(sg.k_tail.data(), sg.k_tail.data() + m * D, static_cast<std::size_t>((sg.n_tail - m) * D) * sizeof(Half));
    std::memmove(sg.v_tail.data(), sg.v_tail.data() + m * D, static_cast<std::size_t>((sg.n_tail - m) * D) * sizeof(Half));
    sg.n_old += m;
    sg.n_tail -= m;
    fit(sg.k_tail, sg.n_tail, D);
    fit(sg.v_tail, sg.n_tail, D);
  }

  Status evict_segment(Segment& sg, int layer, std::int64_t P, Worker& w) {
    if constexpr (kEvicts) {
      const std::int64_t N = sg.size();
      const std::int64_t C = Evict::budget(cfg_.evict, layer, shape_.layers, P);
      if (!Evict::should_compact(cfg_.evict, N, C)) return Status::kSuccess;
      const std::int32_t t_cur = static_cast<std::int32_t>(P - 1);
      w.scores.resize(static_cast<std::size_t>(N));
      w.keys.resize(static_cast<std::size_t>(N));
      w.keep.resize(static_cast<std::size_t>(N));
      for (std::int64_t j = 0; j < N; ++j)
        w.scores[static_cast<std::size_t>(j)] = Evict::score(cfg_.evict, sg.state.data(), sg.pos.data(), j);
      std::int64_t count = 0;
      MEMATTN_RETURN_IF_ERROR(select_keep(w.scores.data(), sg.pos.data(), N, C, t_cur, Evict::protection(cfg_.evict),
                                          cfg_.evict.selector.tie, w.keys.data(), w.keep.data(), &count));
      compact(sg, w.keep.data(), count);
    }
    return Status::kSuccess;
  }

  // One permutation applied to every region (keep: ascending slots).
  void compact(Segment& sg, const std::int32_t* keep, std::int64_t count) {
    const std::int64_t D = shape_.head_dim, dk = d_keep_;
    std::vector<std::int32_t> local(static_cast<std::size_t>(count));
    // region [lo, hi) -> local indices of its kept slots; returns how many. The first kept slot
    // comes from a binary search: a scan from slot 0 for each of the ~N/G blocks was O(N^2 / G)
    // per compaction, most of a composed H2O step at 4K tokens.
    auto region = [&](std::int64_t lo, std::int64_t hi, std::int64_t* first) {
      std::int64_t i = std::lower_bound(keep, keep + count, lo) - keep;
      *first = i;
      std::int64_t m = 0;
      for (; i < count && keep[i] < hi; ++i) local[static_cast<std::size_t>(m++)] = static_cast<std::int32_t>(keep[i] - lo);
      return m;
    };
    std::int64_t f = 0;
    // quantised blocks: repack K codes of the kept tokens inside each block (exact), drop empty blocks
    std::int64_t nq = 0;
    if constexpr (kQuant) {
      std::vector<QBlock> blocks;
      blocks.reserve(sg.blocks.size());
      std::vector<std::uint8_t> codes;  // one block's K codes, one byte each
      std::int64_t stay = 0;  // slots [0, stay) are kept in place: their blocks do not change
      while (stay < count && keep[stay] == stay) ++stay;
      std::int64_t lo = 0;
      for (QBlock& b : sg.blocks) {
        const std::int64_t n0 = b.n;
        if (lo + n0 <= stay) {
          blocks.push_back(std::move(b));
          lo += n0;
          nq += n0;
          continue;
        }
        const std::int64_t m = region(lo, lo + n0, &f);
        if (m > 0) {
          if (m < n0) {  // the block lost rows: codes to bytes, kept rows moved, packed again (exact)
            const int bits = cfg_.quant.bits_k;
            codes.resize(static_cast<std::size_t>(n0 * dk));
            auto* words = reinterpret_cast<std::uint8_t*>(b.kc.data());
            quant_codes::unpack_stream(words, n0 * dk, bits, codes.data());
            compact_rows(codes.data(), dk, local.data(), m);
            std::fill(b.kc.begin(), b.kc.end(), 0u);
            quant_codes::pack_stream(codes.data(), m * dk, bits, words);
          }
          b.n = m;
          b.kc.resize(static_cast<std::size_t>((m * dk * cfg_.quant.bits_k + 31) / 32));
          b.kc.shrink_to_fit();
          blocks.push_back(std::move(b));
        }
        lo += n0;
        nq += m;
      }
      // value codes/meta of the quantised slots: one ordered gather over [0, sg.nq)
      const std::int64_t mv = region(0, sg.nq, &f);
      compact_rows(sg.vq.data(), v_words_, local.data(), mv);
      compact_rows(sg.vqm.data(), 2 * v_groups_, local.data(), mv);
      sg.blocks.swap(blocks);
      fit(sg.vq, mv, v_words_);
      fit(sg.vqm, mv, 2 * v_groups_);
    }
    const std::int64_t mo = region(sg.nq, sg.nq + sg.n_old, &f);
    compact_rows(sg.k_old.data(), dk, local.data(), mo);
    compact_rows(sg.v_old.data(), dv_keep_, local.data(), mo);
    const std::int64_t mt = region(sg.nq + sg.n_old, sg.size(), &f);
    compact_rows(sg.k_tail.data(), D, local.data(), mt);
    compact_rows(sg.v_tail.data(), D, local.data(), mt);
    compact_rows(sg.pos.data(), 1, keep, count);
    if constexpr (kHasState) compact_rows(sg.state.data(), 1, keep, count);
    sg.nq = nq;
    sg.n_old = mo;
    sg.n_tail = mt;
    fit(sg.k_old, mo, dk);
    fit(sg.k_tail, mt, D);
    fit(sg.v_old, mo, dv_keep_);
    fit(sg.v_tail, mt, D);
    fit(sg.pos, count, 1);
    if constexpr (kHasState) fit(sg.state, count, 1);
  }

  cache::CacheShape shape_;
  Config cfg_;
  Executor executor_;
  std::string spec_;
  std::vector<Segment> segments_;            // [seq][layer][kv head]
  std::vector<Window> windows_;              // [seq][layer] (ThinK channel scoring)
  ChunkLedger chunks_;  // held tokens per sequence, the open chunk's per sequence and layer
  std::vector<Worker> workers_;
  std::int64_t d_keep_ = 0, dv_keep_ = 0, tail_keep_ = 0, v_words_ = 0, v_groups_ = 0;
  std::size_t bytes_ = 0, peak_ = 0;
};

}  // namespace cpu
MEMATTN_NAMESPACE_END
