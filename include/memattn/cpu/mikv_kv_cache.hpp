// The MiKV mixed-precision KV cache on the CPU ("mikv", quant/mixed.hpp; specs/quantization.md §8,
// eviction.md §2.8, §4.3): tokens an eviction policy would drop are kept at low precision.
//
// Per (sequence, layer, KV head):
//   exact  fp16 rows in chronological order: sinks, the recent window, the chunk being attended,
//          and the High tier when high = 16 (these rows may be compacted: they are not quantised);
//   hi8    INT8 per-token rows of the High tier when high = 8 (quant/mixed_store.hpp pool);
//   lo     2/3/4-bit per-token rows of the Low tier (pool; rows never move, eviction clears a bit),
//          or with kChannelLow (`lowk=1`) per-channel key blocks of 32 tokens after an exact staging
//          area (quant/mixed_block_store.hpp);
//   the per-channel key balancer b_c (frozen after the first chunk of >= 32 tokens or at the first
//   demotion, whichever comes first; statistics max|q_c| over the group's query heads and max|k_c|).
//
// attend(): the chunk is appended to the exact rows, then its queries attend over lo + hi8 + exact
// (causal on the chunk) with ONE softmax: the logits of every tier go into one stash row per query
// (quantised tiers with folded scales, cpu/mikv_decode.hpp), then max, exp, sum, and P.V per tier.
// The stash doubles as the fused score epilogue (§4.3, fp32 "precise" mode): p = exp(s - lse),
// GQA-reduced, feeds the scorer (H2O accumulation) of the exact and High tokens, and of the Low
// tokens with track_low_scores.
// end_chunk(): per segment the Tiered selector (cpu/evict_tiered.hpp) assigns High / Low / Evict
// under the exact budgets; demoted rows are quantised into lo (exact or INT8 -> low bits), evicted
// low rows lose their live bit, exact rows are compacted, empty trailing pages are released.
// Bytes reported: exact rows (capacity) + positions + scorer state + both pools (records, positions,
// state, live bits, whole pages) + balancer arrays, all segments.
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
#include "memattn/cache/kv_spec.hpp"
#include "memattn/core/executor.hpp"
#include "memattn/cpu/convert.hpp"
#include "memattn/cpu/evict_scores.hpp"
#include "memattn/cpu/evict_select.hpp"
#include "memattn/cpu/evict_tiered.hpp"
#include "memattn/cpu/kv_cache_helpers.hpp"
#include "memattn/cpu/mikv_decode.hpp"
#include "memattn/cpu/quantize_codes.hpp"
#include "memattn/quant/mixed.hpp"
#include "memattn/quant/mixed_block_store.hpp"
#include "memattn/quant/mixed_store.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {

template <class Scorer = evict::AccumAttn, bool kChannelLow = false>
class MixedKvCache final : public cache::KvCache {
 public:
  using Policy = quant::Mixed<Scorer>;
  using Params = typename Policy::Params;
  using State = typename Policy::State;
  using SP = typename Policy::ScorePolicy;
  using Pool = quant::MixedRowPool<State, quant_codes::Codec>;  // vector quantiser on AVX2 builds (same bits)
  using LowPool = std::conditional_t<kChannelLow, quant::MixedBlockPool<State, quant_codes::Codec>, Pool>;
  static constexpr bool kHasState = Scorer::kState != evict::StateKind::kNone;
  static constexpr std::int64_t kGranule = 16;
  static constexpr std::int64_t kQueryBlock = 64;
  static constexpr std::int64_t kBalancerChunk = 32;  // first prefill chunk that freezes the balancer

  struct Config {
    Params policy;
    evict::GroupReduce reduce = evict::GroupReduce::kMean;
  };

  static Status create(const cache::CacheShape& shape, const Config& config, const std::string& spec,
                       const Executor& executor, std::unique_ptr<MixedKvCache>* out) {
    if (out == nullptr) return Status::kErrorNullPointer;
    MEMATTN_RETURN_IF_ERROR(cache::validate_shape(shape));
    MEMATTN_RETURN_IF_ERROR(Policy::check(config.policy, shape.head_dim, shape.max_tokens));
    if (config.policy.channel_keys != kChannelLow) return Status::kErrorInvalidArgument;
    out->reset(new MixedKvCache(shape, config, spec, executor));
    return Status::kSuccess;
  }

  const char* spec() const override { return spec_.c_str(); }
  const cache::CacheShape& shape() const override { return shape_; }
  const Params& params() const { return cfg_.policy; }
  evict::TierBudget tier_budget() const { return budget_; }

  Status attend(int seq, int layer, TensorView<const float, 3> q, TensorView<const float, 3> k,
                TensorView<const float, 3> v, TensorView<float, 3> out) override {
    MEMATTN_RETURN_IF_ERROR(check_attend_args(shape_, seq, layer, q, k, v, out));
    const std::int64_t n = q.shape[0], Hkv = shape_.kv_heads, D = shape_.head_dim, len = chunks_.len(seq);
    MEMATTN_RETURN_IF_ERROR(chunks_.check_step(seq, layer, n, shape_.max_tokens));
    if (!all_finite(q) || !storable<Half>(k) || !storable<Half>(v)) return Status::kErrorNonFinite;

    for (std::int64_t h = 0; h < Hkv; ++h) grow(segment(seq, layer, h), segment(seq, layer, h).size + n);
    std::vector<Status> status(static_cast<std::size_t>(Hkv), Status::kSuccess);
    executor_.for_each(Hkv, [&](std::int64_t h, int worker) {
      Segment& sg = segment(seq, layer, h);
      const std::int64_t base = sg.size, G = shape_.q_heads / Hkv;
      for (std::int64_t t = 0; t < n; ++t) {
        from_float_n(k.ptr(t, h), D, sg.k.data() + (base + t) * D);
        from_float_n(v.ptr(t, h), D, sg.v.data() + (base + t) * D);
        sg.pos[static_cast<std::size_t>(base + t)] = static_cast<std::int32_t>(len + t);
        if constexpr (kHasState) SP::init_token(sg.state.data(), base + t, k.ptr(t, h), static_cast<int>(D));
      }
      sg.size = base + n;
      if (!sg.frozen && cfg_.policy.balancer) {
        for (std::int64_t t = 0; t < n; ++t)
          for (std::int64_t c = 0; c < D; ++c) {
            for (std::int64_t g = 0; g < G; ++g)
              sg.qmax[static_cast<std::size_t>(c)] = std::max(sg.qmax[static_cast<std::size_t>(c)], std::fabs(q.ptr(t, h * G + g)[c]));
            sg.kmax[static_cast<std::size_t>(c)] =
                std::max(sg.kmax[static_cast<std::size_t>(c)], std::fabs(half_to_float(sg.k[static_cast<std::size_t>((base + t) * D + c)])));
          }
      }
      Status st = Status::kSuccess;
      for (std::int64_t t0 = 0; t0 < n && st == Status::kSuccess; t0 += kQueryBlock)
        st = attend_block(sg, h, q, out, len, n, t0, std::min(n, t0 + kQueryBlock), workers_[static_cast<std::size_t>(worker)]);
      status[static_cast<std::size_t>(h)] = st;
    });
    for (Status s : status) MEMATTN_RETURN_IF_ERROR(s);
    if (n >= kBalancerChunk)
      for (std::int64_t h = 0; h < Hkv; ++h) freeze_balancer(segment(seq, layer, h));
    chunks_.record(seq, layer, n);
    recount();
    return Status::kSuccess;
  }

  Status end_chunk(int seq, const cache::ChunkSignals&) override {
    if (seq < 0 || seq >= shape_.max_sequences) return Status::kErrorInvalidArgument;
    if (!chunks_.complete(seq)) return Status::kErrorInvalidArgument;  // a layer was skipped
    chunks_.close(seq);
    if (chunks_.len(seq) == 0) return Status::kSuccess;
    const std::int64_t L = shape_.layers, Hkv = shape_.kv_heads;
    std::vector<Status> status(static_cast<std::size_t>(L * Hkv), Status::kSuccess);
    executor_.for_each(L * Hkv, [&](std::int64_t task, int worker) {
      status[static_cast<std::size_t>(task)] =
          tier_event(seq, segment(seq, static_cast<int>(task / Hkv), task % Hkv), workers_[static_cast<std::size_t>(worker)]);
    });
    recount();
    for (Status s : status) MEMATTN_RETURN_IF_ERROR(s);
    return Status::kSuccess;
  }

  Status reset(int seq) override {
    if (seq < 0 || seq >= shape_.max_sequences) return Status::kErrorInvalidArgument;
    for (int l = 0; l < shape_.layers; ++l) {
      for (int h = 0; h < shape_.kv_heads; ++h) segment(seq, l, h) = new_segment();
    }
    chunks_.reset(seq);
    recount();
    return Status::kSuccess;
  }

  // Exact rows hold at most the High budget plus one chunk.
  Status reserve(int seq, int tokens) override {
    if (seq < 0 || seq >= shape_.max_sequences || tokens < 0) return Status::kErrorInvalidArgument;
    if (tokens > shape_.max_tokens) return Status::kErrorCapacityExceeded;
    for (int l = 0; l < shape_.layers; ++l)
      for (int h = 0; h < shape_.kv_heads; ++h) {
        Segment& sg = segment(seq, l, h);
        const std::int64_t want = std::min<std::int64_t>(tokens, budget_.high_tokens + kGranule);
        if (want > sg.capacity) set_capacity(sg, want);
      }
    recount();
    return Status::kSuccess;
  }

  std::int64_t tokens(int seq) const override { return seq >= 0 && seq < shape_.max_sequences ? chunks_.len(seq) : 0; }
  std::size_t bytes() const override { return bytes_; }
  std::size_t peak_bytes() const override { return peak_; }

  // ---- inspection (tests, reports) ----
  // One live token of a segment as the decode sees it: fp64 values of the dequantised cache
  // (x = z + code*s exactly; keys divided by the balancer), its tier and its score.
  struct TokenView {
    std::int32_t pos;
    evict::Tier tier;
    bool exact;  // fp16 row (sink, recent or fp16 High)
    float score;
    std::vector<double> k, v;
  };
  std::vector<TokenView> tokens_of(int seq, int layer, int h) const {
    const Segment& sg = segment(seq, layer, h);
    const std::int64_t D = shape_.head_dim;
    std::vector<TokenView> out;
    auto pool_rows = [&](const Pool& p, evict::Tier tier) {
      for (std::int64_t s = 0; s < p.slots(); ++s) {
        if (!p.is_live(s)) continue;
        TokenView t{p.pos(s), tier, false, SP::score(score_params_, p.state(), p.positions(), s), {}, {}};
        const quant::MixedRowView r = p.row(s);
        for (std::int64_t c = 0; c < D; ++c) {
          const int j = static_cast<int>(c / r.cfg.group_size());
          const quant::GroupMeta mk = r.k_meta(j), mv = r.v_meta(j);
          t.k.push_back((quant::half_to_double(mk.zero) + r.k_code(static_cast<int>(c)) * quant::half_to_double(mk.scale)) /
                        sg.bal[static_cast<std::size_t>(c)]);
          t.v.push_back(quant::half_to_double(mv.zero) + r.v_code(static_cast<int>(c)) * quant::half_to_double(mv.scale));
        }
        out.push_back(std::move(t));
      }
    };
    if constexpr (kChannelLow) {
      std::vector<float> k(static_cast<std::size_t>(D)), v(k.size());
      for (std::int64_t s = 0; s < sg.lo.slots(); ++s) {
        if (!sg.lo.is_live(s)) continue;
        TokenView t{sg.lo.pos(s), evict::Tier::kLow, false, SP::score(score_params_, sg.lo.state(), sg.lo.positions(), s), {}, {}};
        sg.lo.dequant(s, k.data(), v.data());  // code * s + z is exact in fp32 (fp16 meta)
        for (std::int64_t c = 0; c < D; ++c) {
          t.k.push_back(static_cast<double>(k[static_cast<std::size_t>(c)]) / sg.bal[static_cast<std::size_t>(c)]);
          t.v.push_back(v[static_cast<std::size_t>(c)]);
        }
        out.push_back(std::move(t));
      }
    } else {
      pool_rows(sg.lo, evict::Tier::kLow);
    }
    pool_rows(sg.hi8, evict::Tier::kHigh);
    for (std::int64_t j = 0; j < sg.size; ++j) {
      TokenView t{sg.pos[static_cast<std::size_t>(j)], evict::Tier::kHigh, true,
                  SP::score(score_params_, sg.state.data(), sg.pos.data(), j), {}, {}};
      for (std::int64_t c = 0; c < D; ++c) {
        t.k.push_back(half_to_float(sg.k[static_cast<std::size_t>(j * D + c)]));
        t.v.push_back(half_to_float(sg.v[static_cast<std::size_t>(j * D + c)]));
      }
      out.push_back(std::move(t));
    }
    return out;
  }
  // Per-channel balancer b_c of a segment (all 1 before it is frozen or when disabled).
  const float* balancer(int seq, int layer, int h) const { return segment(seq, layer, h).bal.data(); }
  bool balancer_frozen(int seq, int layer, int h) const { return segment(seq, layer, h).frozen; }
  std::int64_t exact_rows(int seq, int layer, int h) const { return segment(seq, layer, h).size; }
  std::int64_t high8_rows(int seq, int layer, int h) const { return segment(seq, layer, h).hi8.live(); }
  std::int64_t low_rows(int seq, int layer, int h) const { return segment(seq, layer, h).lo.live(); }
  // Raw tiers of a segment (device uploads, GPU tests): pools, exact rows [exact_rows][D] and state.
  const LowPool& low_pool(int seq, int layer, int h) const { return segment(seq, layer, h).lo; }
  const Pool& high8_pool(int seq, int layer, int h) const { return segment(seq, layer, h).hi8; }
  const Half* exact_keys(int seq, int layer, int h) const { return segment(seq, layer, h).k.data(); }
  const Half* exact_values(int seq, int layer, int h) const { return segment(seq, layer, h).v.data(); }
  const State* exact_state(int seq, int layer, int h) const { return segment(seq, layer, h).state.data(); }

 private:
  struct Segment {
    std::vector<Half> k, v;          // exact rows [capacity][D], chronological
    std::vector<std::int32_t> pos;   // [capacity]
    std::vector<State> state;        // [capacity]
    std::int64_t size = 0, capacity = 0;
    Pool hi8;
    LowPool lo;
    std::vector<float> bal, qmax, kmax;  // [D]; stats released when frozen
    bool frozen = false;
    std::size_t bytes() const {
      return (k.size() + v.size()) * sizeof(Half) + pos.size() * sizeof(std::int32_t) + state.size() * sizeof(State) +
             hi8.bytes() + lo.bytes() + (bal.size() + qmax.size() + kmax.size()) * sizeof(float);
    }
  };
  struct Worker {
    std::vector<float> buf;
    std::vector<float> score;
    std::vector<std::int32_t> pos;
    std::vector<evict::Tier> cur, next;
    std::vector<Half> kb;
    TierScratch tiers;
  };

  MixedKvCache(const cache::CacheShape& shape, const Config& config, const std::string& spec, const Executor& executor)
      : shape_(shape),
        cfg_(config),
        score_params_(Policy::score_params(config.policy)),
        budget_(Policy::tier_budget(config.policy, shape.head_dim)),
        protect_(Policy::protection(config.policy)),
        lo_cfg_(Policy::low_config(config.policy, shape.head_dim)),
        hi_cfg_(Policy::high_config(config.policy, shape.head_dim)),
        executor_(executor),
        spec_(spec),
        chunks_(shape.max_sequences, shape.layers),
        workers_(static_cast<std::size_t>(executor.concurrency())) {
    segments_.resize(static_cast<std::size_t>(shape.max_sequences) * shape.layers * shape.kv_heads);
    for (Segment& s : segments_) s = new_segment();
    recount();
  }

  Segment new_segment() const {
    Segment s;
    s.hi8 = Pool(hi_cfg_);
    s.lo = LowPool(lo_cfg_);
    const std::size_t D = static_cast<std::size_t>(shape_.head_dim);
    s.bal.assign(D, 1.f);
    if (cfg_.policy.balancer) {
      s.qmax.assign(D, 0.f);
      s.kmax.assign(D, 0.f);
    } else {
      s.frozen = true;
    }
    return s;
  }
  Segment& segment(int seq, int layer, std::int64_t h) {
    return segments_[(static_cast<std::size_t>(seq) * shape_.layers + layer) * shape_.kv_heads + static_cast<std::size_t>(h)];
  }
  const Segment& segment(int seq, int layer, std::int64_t h) const {
    return segments_[(static_cast<std::size_t>(seq) * shape_.layers + layer) * shape_.kv_heads + static_cast<std::size_t>(h)];
  }

  void freeze_balancer(Segment& sg) const {
    if (sg.frozen) return;
    for (std::size_t c = 0; c < sg.bal.size(); ++c)
      sg.bal[c] = quant::balancer_factor(sg.qmax[c], sg.kmax[c], cfg_.policy.balancer_exact_sqrt);
    sg.qmax = std::vector<float>();
    sg.kmax = std::vector<float>();
    sg.frozen = true;
  }

  void set_capacity(Segment& sg, std::int64_t cap) {
    const std::size_t rows = static_cast<std::size_t>(cap), D = static_cast<std::size_t>(shape_.head_dim);
    const std::size_t keep = static_cast<std::size_t>(std::min(sg.size, cap));
    std::vector<Half> k(rows * D), v(rows * D);
    std::copy(sg.k.begin(), sg.k.begin() + static_cast<std::ptrdiff_t>(keep * D), k.begin());
    std::copy(sg.v.begin(), sg.v.begin() + static_cast<std::ptrdiff_t>(keep * D), v.begin());
    std::vector<std::int32_t> pos(rows);
    std::copy(sg.pos.begin(), sg.pos.begin() + static_cast<std::ptrdiff_t>(keep), pos.begin());
    std::vector<State> st(rows);
    std::copy(sg.state.begin(), sg.state.begin() + static_cast<std::ptrdiff_t>(keep), st.begin());
    sg.k.swap(k);
    sg.v.swap(v);
    sg.pos.swap(pos);
    sg.state.swap(st);
    sg.capacity = cap;
  }
  void grow(Segment& sg, std::int64_t need) {
    if (need <= sg.capacity) return;
    const std::int64_t cap = (need + kGranule - 1) / kGranule * kGranule;
    set_capacity(sg, std::min<std::int64_t>(cap, shape_.max_tokens));
    recount();
  }
  void recount() {
    std::size_t b = 0;
    for (const Segment& s : segments_) b += s.bytes();
    bytes_ = b;
    peak_ = std::max(peak_, bytes_);
  }

  // Queries [t0, t1) of the chunk (the chunk's rows are the exact rows from sg.size - n on) over
  // every live token of the segment, one softmax; then the scorer epilogue.
  Status attend_block(Segment& sg, std::int64_t h, const TensorView<const float, 3>& q, const TensorView<float, 3>& out,
                      std::int64_t len, std::int64_t n, std::int64_t t0, std::int64_t t1, Worker& w) {
    const std::int64_t D = shape_.head_dim, G = shape_.q_heads / shape_.kv_heads, rows = (t1 - t0) * G;
    const std::int64_t nlo = sg.lo.slots(), nh8 = sg.hi8.slots(), ne = sg.size, ncol = nlo + nh8 + ne;
    std::size_t pool_scratch = std::max(mixed_rows_scratch_elems(rows, lo_cfg_), mixed_rows_scratch_elems(rows, hi_cfg_));
    if constexpr (kChannelLow) pool_scratch = std::max(pool_scratch, LowPool::scratch_elems(lo_cfg_));
    const std::size_t need =
        static_cast<std::size_t>(rows * ncol + ncol + 3 * rows * D + 2 * rows + 2 * mikv_detail::kTile * D) + pool_scratch;
    if (w.buf.size() < need) w.buf.resize(need);
    float* p = w.buf.data();
    auto take = [&](std::int64_t count) {
      float* r = p;
      p += count;
      return r;
    };
    using mikv_detail::Map;
    Map S(take(rows * ncol), rows, ncol), Q(take(rows * D), rows, D), Qb(take(rows * D), rows, D), Acc(take(rows * D), rows, D);
    float* m = take(rows);
    float* l = take(rows);
    float* kt = take(mikv_detail::kTile * D);
    float* vt = take(mikv_detail::kTile * D);
    float* pbar = take(ncol);  // one query token's GQA-reduced probabilities
    float* scratch = p;
    const float tau = 1.f / std::sqrt(static_cast<float>(D));
    for (std::int64_t i = t0; i < t1; ++i)
      for (std::int64_t g = 0; g < G; ++g) {
        const float* src = q.ptr(i, h * G + g);
        for (std::int64_t c = 0; c < D; ++c) {
          Q((i - t0) * G + g, c) = src[c] * tau;
          Qb((i - t0) * G + g, c) = src[c] * tau / sg.bal[static_cast<std::size_t>(c)];
        }
      }
    // 1. logits of every tier into one stash (decode-sized row counts on AVX2 builds read every
    // tier where it is stored: codes in place, exact rows as fp16; cpu/mikv_decode.hpp)
    const bool direct = mixed_direct(lo_cfg_, rows) && mixed_direct(hi_cfg_, rows);
    if constexpr (kChannelLow) {
      if (direct)
        block_pool_logits(sg.lo, Qb.data(), rows, S.data(), ncol, scratch);
      else
        sg.lo.logits(Qb.data(), rows, S.data(), ncol, scratch);
    } else {
      MEMATTN_RETURN_IF_ERROR(mixed_rows_logits(sg.lo.records(), sg.lo.live_bits(), nlo, lo_cfg_, Qb.data(), rows, S.data(), ncol, scratch));
    }
    MEMATTN_RETURN_IF_ERROR(
        mixed_rows_logits(sg.hi8.records(), sg.hi8.live_bits(), nh8, hi_cfg_, Qb.data(), rows, S.data() + nlo, ncol, scratch));
    constexpr float kNegInf = -std::numeric_limits<float>::infinity();
    float* S_exact = S.data() + nlo + nh8;
    if (direct && ne > 0)
      dense_block::scores(sg.k.data(), D, static_cast<int>(ne), static_cast<int>(D), Q.data(), static_cast<int>(rows), D,
                          S_exact, ncol);
    for (std::int64_t j0 = 0; j0 < ne; j0 += mikv_detail::kTile) {
      const std::int64_t T = std::min(mikv_detail::kTile, ne - j0);
      mikv_detail::StrideMap St(S_exact + j0, rows, T, Eigen::OuterStride<>(ncol));
      if (!direct) {
        load_rows(sg.k.data() + j0 * D, D, T, D, kt);
        St.noalias() = Q * mikv_detail::ConstMap(kt, T, D).transpose();
      }
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::int32_t qpos = static_cast<std::int32_t>(len + t0 + r / G);
        for (std::int64_t t = 0; t < T; ++t)
          if (sg.pos[static_cast<std::size_t>(j0 + t)] > qpos) St(r, t) = kNegInf;
      }
    }
    // 2. one softmax over all tiers (every row sees at least its own token: mx is finite)
    for (std::int64_t r = 0; r < rows; ++r) {
      auto row = S.row(r).array();
      const float mx = row.maxCoeff();
      row = (row - mx).exp();  // exp(-inf) = 0 for dead and future slots
      m[r] = mx;
      l[r] = row.sum();
    }
    // 3. P.V per tier
    Acc.setZero();
    if constexpr (kChannelLow) {
      if (direct)
        block_pool_values(sg.lo, S.data(), ncol, rows, Acc.data(), scratch);
      else
        sg.lo.values(S.data(), ncol, rows, Acc.data(), scratch);
    } else {
      MEMATTN_RETURN_IF_ERROR(mixed_rows_values(sg.lo.records(), nlo, lo_cfg_, S.data(), ncol, rows, Acc.data(), scratch));
    }
    MEMATTN_RETURN_IF_ERROR(mixed_rows_values(sg.hi8.records(), nh8, hi_cfg_, S.data() + nlo, ncol, rows, Acc.data(), scratch));
    if (direct && ne > 0) {
      dense_block::values(sg.v.data(), D, static_cast<int>(ne), static_cast<int>(D), S_exact, static_cast<int>(rows), ncol,
                          Acc.data(), D);
    } else {
      for (std::int64_t j0 = 0; j0 < ne; j0 += mikv_detail::kTile) {
        const std::int64_t T = std::min(mikv_detail::kTile, ne - j0);
        load_rows(sg.v.data() + j0 * D, D, T, D, vt);
        Eigen::Map<const mikv_detail::RowMatrix, 0, Eigen::OuterStride<>> Pt(S_exact + j0, rows, T, Eigen::OuterStride<>(ncol));
        Acc.noalias() += Pt * mikv_detail::ConstMap(vt, T, D);
      }
    }
    for (std::int64_t i = t0; i < t1; ++i)
      for (std::int64_t g = 0; g < G; ++g) {
        const std::int64_t r = (i - t0) * G + g;
        float* dst = out.ptr(i, h * G + g);
        for (std::int64_t c = 0; c < D; ++c) dst[c] = Acc(r, c) / l[r];
      }
    // 4. fused score epilogue: p = e / l per head, GQA-reduced, query tokens in order
    if constexpr (Scorer::kNeedsDecodeProbs) {
      const bool track = cfg_.policy.track_low_scores;
      const std::int64_t c0 = track ? 0 : nlo, nc = ncol - c0;  // the columns whose scores are kept
      for (std::int64_t r = 0; r < rows; ++r) S.row(r).tail(nc) /= l[r];  // p = e / l (S is done with)
      for (std::int64_t i = t0; i < t1; ++i) {
        const std::int64_t r0 = (i - t0) * G;
        const std::int64_t visible = sg.lo.live() + sg.hi8.live() + ne - (n - 1 - i);
        group_reduce_rows(S.data() + r0 * ncol + c0, ncol, G, nc, cfg_.reduce, pbar + c0);
        if (track)
          for (std::int64_t s = 0; s < nlo; ++s)
            if (sg.lo.is_live(s)) SP::on_decode_prob(score_params_, sg.lo.state(), s, pbar[s], visible);
        for (std::int64_t s = 0; s < nh8; ++s)
          if (sg.hi8.is_live(s)) SP::on_decode_prob(score_params_, sg.hi8.state(), s, pbar[nlo + s], visible);
        const std::int32_t qpos = static_cast<std::int32_t>(len + i);
        for (std::int64_t j = 0; j < ne; ++j)
          if (sg.pos[static_cast<std::size_t>(j)] <= qpos)
            SP::on_decode_prob(score_params_, sg.state.data(), j, pbar[nlo + nh8 + j], visible);
      }
    }
    return Status::kSuccess;
  }

  // Balanced fp16 key of an exact row / an INT8 row; false if a balanced value leaves fp16.
  bool balanced_key(const Segment& sg, const Half* k, Half* out) const {
    for (std::size_t c = 0; c < sg.bal.size(); ++c) {
      const float x = half_to_float(k[c]) * sg.bal[c];
      if (!(std::fabs(x) <= 65504.f)) return false;
      out[c] = float_to_half(x);
    }
    return true;
  }

  // The Tiered decision of one segment and its application (eviction.md §2.8).
  Status tier_event(int seq, Segment& sg, Worker& w) {
    const std::int64_t high = sg.size + sg.hi8.live(), low = sg.lo.live();
    const bool over_high = budget_.high_tokens >= 0 && high > budget_.high_tokens;
    const bool over_low = budget_.low_tokens >= 0 && low > budget_.low_tokens;
    const bool int8_pending = cfg_.policy.high_bits == 8 && has_unprotected_exact(sg, seq);
    if (!over_high && !over_low && !int8_pending) return Status::kSuccess;
    freeze_balancer(sg);
    const std::int32_t t_cur = static_cast<std::int32_t>(chunks_.len(seq) - 1);
    // candidates: [lo slots | hi8 slots | exact rows]; dead pool slots are skipped via index maps
    const std::int64_t nlo = sg.lo.slots(), nh8 = sg.hi8.slots(), ne = sg.size;
    const std::size_t N = static_cast<std::size_t>(nlo + nh8 + ne);
    w.score.resize(N);
    w.pos.resize(N);
    w.cur.resize(N);
    w.next.resize(N);
    std::vector<std::int64_t> where;  // candidate -> column in [lo | hi8 | exact]
    where.reserve(N);
    std::size_t m = 0;
    auto add = [&](std::int64_t col, float s, std::int32_t p, evict::Tier t) {
      w.score[m] = s;
      w.pos[m] = p;
      w.cur[m] = t;
      where.push_back(col);
      ++m;
    };
    for (std::int64_t s = 0; s < nlo; ++s)
      if (sg.lo.is_live(s)) add(s, SP::score(score_params_, sg.lo.state(), sg.lo.positions(), s), sg.lo.pos(s), evict::Tier::kLow);
    for (std::int64_t s = 0; s < nh8; ++s)
      if (sg.hi8.is_live(s))
        add(nlo + s, SP::score(score_params_, sg.hi8.state(), sg.hi8.positions(), s), sg.hi8.pos(s), evict::Tier::kHigh);
    for (std::int64_t j = 0; j < ne; ++j)
      add(nlo + nh8 + j, SP::score(score_params_, sg.state.data(), sg.pos.data(), j), sg.pos[static_cast<std::size_t>(j)],
          evict::Tier::kHigh);
    // Block Low tier: the selector only splits High / Low; the Low budget is enforced below in
    // whole blocks, since a token-level eviction inside a block frees no memory (spec §8.3 rule 6).
    evict::TierBudget tb = budget_;
    if constexpr (kChannelLow) tb.low_tokens = -1;
    MEMATTN_RETURN_IF_ERROR(assign_tiers(w.score.data(), w.pos.data(), w.cur.data(), static_cast<std::int64_t>(m), t_cur,
                                         protect_, cfg_.policy.selector.tie, tb, &w.tiers, w.next.data()));
    // Check every row to be quantised fits fp16 once balanced, before anything changes.
    const std::size_t D = static_cast<std::size_t>(shape_.head_dim);
    w.kb.resize(D);
    std::vector<Half> vb(D);
    for (std::size_t i = 0; i < m; ++i) {
      const std::int64_t col = where[i];
      if (col < nlo + nh8) continue;
      const std::int64_t j = col - nlo - nh8;
      const bool to_low = w.next[i] == evict::Tier::kLow;
      const bool to_int8 = w.next[i] == evict::Tier::kHigh && cfg_.policy.high_bits == 8 &&
                           !evict::is_protected(w.pos[i], t_cur, protect_);
      if ((to_low || to_int8) && !balanced_key(sg, sg.k.data() + j * D, w.kb.data())) return Status::kErrorNonFinite;
    }
    // 1. free: evicted low rows, evicted or demoted INT8 rows
    for (std::size_t i = 0; i < m; ++i) {
      const std::int64_t col = where[i];
      if (col < nlo && w.next[i] == evict::Tier::kEvict) sg.lo.kill(col);
    }
    std::uint32_t flags = 0;
    // 2. INT8 -> Low (requantised from the INT8 values), INT8 -> evict
    for (std::size_t i = 0; i < m; ++i) {
      const std::int64_t col = where[i];
      if (col < nlo || col >= nlo + nh8 || w.next[i] == evict::Tier::kHigh) continue;
      const std::int64_t s = col - nlo;
      if (w.next[i] == evict::Tier::kLow) {
        const quant::MixedRowView r = sg.hi8.row(s);
        for (std::size_t c = 0; c < D; ++c) {
          w.kb[c] = float_to_half(r.k_balanced(static_cast<int>(c)));
          vb[c] = float_to_half(r.v(static_cast<int>(c)));
        }
        sg.lo.insert(w.kb.data(), vb.data(), sg.hi8.pos(s), sg.hi8.state()[s], &flags);
      }
      sg.hi8.kill(s);
    }
    // 3. exact rows: -> Low, -> INT8 High (non-protected, high = 8), -> evict; the rest stay exact
    std::vector<std::int32_t> keep;
    keep.reserve(static_cast<std::size_t>(ne));
    for (std::size_t i = 0; i < m; ++i) {
      const std::int64_t col = where[i];
      if (col < nlo + nh8) continue;
      const std::int64_t j = col - nlo - nh8;
      const Half* kr = sg.k.data() + j * D;
      const Half* vr = sg.v.data() + j * D;
      const bool prot = evict::is_protected(w.pos[i], t_cur, protect_);
      if (w.next[i] == evict::Tier::kLow) {
        balanced_key(sg, kr, w.kb.data());
        sg.lo.insert(w.kb.data(), vr, w.pos[i], sg.state[static_cast<std::size_t>(j)], &flags);
      } else if (w.next[i] == evict::Tier::kHigh && cfg_.policy.high_bits == 8 && !prot) {
        balanced_key(sg, kr, w.kb.data());
        sg.hi8.insert(w.kb.data(), vr, w.pos[i], sg.state[static_cast<std::size_t>(j)], &flags);
      } else if (w.next[i] == evict::Tier::kHigh) {
        keep.push_back(static_cast<std::int32_t>(j));
      }
    }
    const std::int64_t count = static_cast<std::int64_t>(keep.size());
    compact_rows(sg.k.data(), static_cast<std::int64_t>(D), keep.data(), count);
    compact_rows(sg.v.data(), static_cast<std::int64_t>(D), keep.data(), count);
    compact_rows(sg.pos.data(), 1, keep.data(), count);
    compact_rows(sg.state.data(), 1, keep.data(), count);
    sg.size = count;
    if (sg.capacity - count > 2 * kGranule) set_capacity(sg, (count + 1 + kGranule - 1) / kGranule * kGranule);
    if constexpr (kChannelLow) evict_low_blocks(sg);
    sg.lo.reclaim();
    sg.hi8.reclaim();
    return flags == quant::kQuantOk ? Status::kSuccess : Status::kErrorNonFinite;
  }

  // Block Low tier over its budget: evict the whole block with the smallest score sum over its
  // live tokens (ties: the older block), staged rows one by one (lowest score, older first) when
  // no block is left.
  void evict_low_blocks(Segment& sg) {
    if constexpr (kChannelLow) {
      const std::int64_t G = LowPool::kBlock;
      while (budget_.low_tokens >= 0 && sg.lo.live() > budget_.low_tokens) {
        std::int64_t first = -1, count = 0;
        double best = 0;
        auto consider = [&](std::int64_t f, std::int64_t n) {
          double sum = 0;
          bool any = false;
          for (std::int64_t s = f; s < f + n; ++s)
            if (sg.lo.is_live(s)) {
              sum += SP::score(score_params_, sg.lo.state(), sg.lo.positions(), s);
              any = true;
            }
          if (any && (first < 0 || sum < best)) first = f, count = n, best = sum;
        };
        for (std::int64_t b = 0; b < sg.lo.blocks(); ++b) consider(b * G, G);
        if (first < 0)
          for (std::int64_t s = sg.lo.blocks() * G; s < sg.lo.slots(); ++s) consider(s, 1);
        if (first < 0) break;
        for (std::int64_t s = first; s < first + count; ++s)
          if (sg.lo.is_live(s)) sg.lo.kill(s);
      }
    }
  }

  bool has_unprotected_exact(const Segment& sg, int seq) const {
    const std::int32_t t_cur = static_cast<std::int32_t>(chunks_.len(seq) - 1);
    for (std::int64_t j = 0; j < sg.size; ++j)
      if (!evict::is_protected(sg.pos[static_cast<std::size_t>(j)], t_cur, protect_)) return true;
    return false;
  }

  cache::CacheShape shape_;
  Config cfg_;
  typename SP::Params score_params_;
  evict::TierBudget budget_;
  evict::Protection protect_;
  quant::MixedRowConfig lo_cfg_, hi_cfg_;
  Executor executor_;
  std::string spec_;
  std::vector<Segment> segments_;            // [seq][layer][kv head]
  ChunkLedger chunks_;  // held tokens per sequence, the open chunk's per sequence and layer
  std::vector<Worker> workers_;
  std::size_t bytes_ = 0;
  std::size_t peak_ = 0;
};

// ---- --kv registry entry (cpu/kv_cache_factory.hpp lists it) -------------------------------------

inline const cache::PolicyInfo& mikv_policy_info() {
  static const cache::PolicyInfo info = {
      "mikv",
      "MiKV mixed precision: H2O-ranked tokens beyond the `budget` High tokens are kept at `low` bits "
      "(per token, groups of head_dim/2, K channel-balanced) instead of being evicted",
      {{"budget", 256, 1, 10000000, true, "High (fp16 or INT8) tokens per (layer, KV head), sinks + recent included"},
       {"high", 16, 8, 16, true, "High-tier precision: 16 (fp16) or 8 (INT8 per token)"},
       {"low", 2, 2, 4, true, "Low-tier bits: 2, 3 or 4"},
       {"groups", 2, 1, 256, true, "quantisation groups per token (head_dim/groups channels each; MiKV: 2)"},
       {"lowbudget", -1, -1, 10000000, true, "Low tokens per (layer, KV head); -1 unlimited (nothing evicted)"},
       {"bytes", 0, 0, 1e12, true, "> 0: bytes per (layer, KV head) for High + Low; the Low budget is solved from it"},
       {"recent", -1, -1, 10000000, true, "newest tokens kept exact; -1: budget/2"},
       {"sink", 4, 0, 1000000, true, "first tokens forced High (exact)"},
       {"track", 0, 0, 1, true, "1: keep accumulating the scores of Low tokens (else frozen at demotion)"},
       {"balance", 1, 0, 1, true, "per-channel key balancer b_c = sqrt(max|q_c| / max|k_c|)"},
       {"lowk", 0, 0, 1, true, "Low-tier keys: 0 per token (MiKV), 1 per channel over blocks of 32 tokens, Low eviction in whole blocks (spec §8.2)", false,
        true},
       {"exact", 0, 0, 1, true, "balancer: 1 exact square root, 0 nearest power of two"},
       {"gamma", 1, 0, 1, false, "decay of the accumulated score (1 = H2O)"},
       {"gqa", 0, 0, 2, true, "reduction over a group's query heads: 0 mean, 1 max, 2 sum"}}};
  return info;
}

template <int = 0>  // a template: instantiated only where called (kv_cache_factory.hpp)
inline Status make_mikv_kv_cache(const cache::ResolvedParams& p, const cache::CacheShape& shape, const Executor& executor,
                                 std::unique_ptr<cache::KvCache>* out, std::string* error) {
  const cache::PolicyInfo& info = mikv_policy_info();
  MixedKvCache<>::Config c;
  c.policy = quant::mikv_params(p.get_int("budget"), p.get_int("recent"));
  c.policy.high_bits = p.get_int("high");
  c.policy.low_bits = p.get_int("low");
  c.policy.groups = p.get_int("groups");
  c.policy.low_budget = p.get_int("lowbudget");
  c.policy.bytes = static_cast<std::int64_t>(p.get("bytes"));
  c.policy.selector.n_sink = p.get_int("sink");
  c.policy.track_low_scores = p.get_int("track") != 0;
  c.policy.balancer = p.get_int("balance") != 0;
  c.policy.channel_keys = p.get_int("lowk") != 0;
  c.policy.balancer_exact_sqrt = p.get_int("exact") != 0;
  c.policy.scorer.gamma = static_cast<float>(p.get("gamma"));
  c.policy.scorer.reduce = c.reduce = static_cast<evict::GroupReduce>(p.get_int("gqa"));
  const auto& pol = c.policy;
  const Status st = quant::MiKV::check(pol, shape.head_dim, shape.max_tokens);
  if (st != Status::kSuccess) {
    if (pol.high_bits != 16 && pol.high_bits != 8)
      *error = "mikv: high must be 16 (fp16) or 8 (INT8), got " + std::to_string(pol.high_bits);
    else if (st == Status::kErrorUnsupportedHeadDim)
      *error = "mikv: head_dim must be a multiple of 8 in [8, 256] (got " + std::to_string(shape.head_dim) + ")";
    else if (st == Status::kErrorCapacityExceeded)
      *error = "mikv: budget " + std::to_string(pol.budget) + " is larger than the cache capacity " +
               std::to_string(shape.max_tokens);
    else if (pol.low_bits != 2 && pol.low_bits != 3 && pol.low_bits != 4)
      *error = "mikv: low must be 2, 3 or 4 bits, got " + std::to_string(pol.low_bits);
    else if (shape.head_dim % pol.groups != 0)
      *error = "mikv: groups must divide head_dim " + std::to_string(shape.head_dim);
    else if (pol.bytes > 0 && pol.low_budget != -1)
      *error = "mikv: give either lowbudget or bytes, not both";
    else if (pol.bytes > 0)
      *error = "mikv: bytes " + std::to_string(pol.bytes) + " do not cover the High tier (" +
               std::to_string(static_cast<long long>(quant::MiKV::high_tier_bytes(pol, shape.head_dim))) +
               " bytes for budget " + std::to_string(pol.budget) + ")";
    else
      *error = "mikv: the budget must be >= 1 and cover the protected tokens (sink + recent = " +
               std::to_string(pol.selector.n_sink + pol.selector.n_recent) + ")";
    return st;
  }
  if (pol.channel_keys) {
    using Blocked = MixedKvCache<evict::AccumAttn, true>;
    Blocked::Config cb;
    cb.policy = c.policy;
    cb.reduce = c.reduce;
    std::unique_ptr<Blocked> cache_ptr;
    MEMATTN_RETURN_IF_ERROR(Blocked::create(shape, cb, cache::canonical_spec(info, p), executor, &cache_ptr));
    *out = std::move(cache_ptr);
    return Status::kSuccess;
  }
  std::unique_ptr<MixedKvCache<>> cache_ptr;
  MEMATTN_RETURN_IF_ERROR(MixedKvCache<>::create(shape, c, cache::canonical_spec(info, p), executor, &cache_ptr));
  *out = std::move(cache_ptr);
  return Status::kSuccess;
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
