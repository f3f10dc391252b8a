// MiKV mixed-precision KV policy (Yang et al., arXiv 2402.18096; specs/quantization.md §8,
// eviction.md §2.8): an importance policy marks every cached token keep-high, keep-low or evict.
//
//   Mixed<Scorer = evict::AccumAttn>
//
// * Scorer: any state-based eviction scorer of evict/policy.hpp (H2O accumulated attention by
//   default; PersistCount, KNorm, Positional also fit). Its per-token state and decode epilogue are
//   those of evict::EvictionPolicy<Scorer, ...>, reused as is. Window scorers need the observation
//   window of the evicting cache and are rejected at compile time.
// * Tiers per (sequence, layer, KV head): exact fp16 rows (the protected sinks and recent window,
//   and the High tier when high_bits = 16), High INT8 rows (high_bits = 8), Low rows at 2/3/4 bits;
//   Low and INT8 rows use quant/mixed_format.hpp (per token, groups of head_dim/2, K balanced).
// * Decisions: the Tiered selector (evict/tiered.hpp) at every chunk end, budgets per segment:
//     high_tokens = budget (sinks + recent included, as H2O's budget),
//     low_tokens  = low_budget, or solved from a byte budget (eviction.md §2.8 "byte budgets"):
//                   low = floor((bytes - budget * high_bytes) / low_bytes), bytes per token with
//                   their side data (position, score, live bit).
//   Low-tier scores freeze at demotion unless track_low_scores (§8.4).
// [lib] With high_bits = 8 the sinks and the recent window stay exact fp16 (they are protected
// High tokens); INT8 applies to the non-protected High tokens. A token demoted from INT8 to Low is
// requantised from its INT8 values (the exact ones are gone).
// [lib] MiKV's relative high budget r*N is not a mode here: budgets are absolute tokens per segment,
// which is what equal-bytes comparisons against H2O need.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"
#include "memattn/evict/policy.hpp"
#include "memattn/evict/tiered.hpp"
#include "memattn/quant/mixed_block_store.hpp"
#include "memattn/quant/mixed_format.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace quant {

template <class Scorer = evict::AccumAttn>
struct Mixed {
  static_assert(!Scorer::kNeedsWindowQueries, "Mixed: window scorers need the evicting cache's observation window");
  // The scorer's per-token state and hooks, exactly as the evicting caches use them.
  using ScorePolicy = evict::EvictionPolicy<Scorer, evict::Uniform, evict::TopK<>, evict::NoMerge, evict::OnOverflow>;
  using State = std::conditional_t<Scorer::kState == evict::StateKind::kU64, std::uint64_t, float>;
  using Selector = evict::Tiered;

  struct Params {
    std::int64_t budget = 256;      // High tokens per segment, sinks and recent included
    std::int64_t low_budget = -1;   // Low tokens per segment; -1 unlimited (MiKV: nothing evicted)
    std::int64_t bytes = 0;         // > 0: low_budget solved from this byte budget per segment
    int high_bits = 16;             // 16 (fp16 rows) or 8 (INT8 per-token rows)
    int low_bits = 2;               // 2, 3 or 4
    int groups = 2;                 // per-token groups (head_dim / groups channels)
    bool balancer = true;           // per-channel key balancer on the quantised tiers
    bool channel_keys = false;      // Low tier: per-channel key blocks of 32 tokens (MixedBlockPool)
    bool balancer_exact_sqrt = false;
    bool track_low_scores = false;
    typename Scorer::Params scorer;
    Selector::Params selector;      // sinks, recent window, ties
  };

  static MixedRowConfig low_config(const Params& p, int head_dim) { return MixedRowConfig{head_dim, p.low_bits, p.groups}; }
  static MixedRowConfig high_config(const Params& p, int head_dim) { return MixedRowConfig{head_dim, 8, p.groups}; }
  // (low_config().validate() also checks groups: 1 <= groups, head_dim % groups == 0)

  // Bytes of one token of one KV head in a tier, side data included (position int32, the
  // scorer's state, a live bit for quantised rows).
  static double exact_token_bytes(int head_dim) { return 2.0 * 2.0 * head_dim + sizeof(std::int32_t) + sizeof(State); }
  static double quant_token_bytes(const MixedRowConfig& c) {
    return static_cast<double>(mixed_row_layout(c).bytes) + sizeof(std::int32_t) + sizeof(State) + 1.0 / 8;
  }
  // A full High tier: protected tokens exact, the rest fp16 or INT8.
  static double high_tier_bytes(const Params& p, int head_dim) {
    const double prot = static_cast<double>(p.selector.n_sink) + p.selector.n_recent;
    const double rest = static_cast<double>(p.budget) - prot;
    return prot * exact_token_bytes(head_dim) +
           rest * (p.high_bits == 16 ? exact_token_bytes(head_dim) : quant_token_bytes(high_config(p, head_dim)));
  }

  // Low budget in tokens (solved from `bytes` when given).
  static std::int64_t low_tokens(const Params& p, int head_dim) {
    if (p.bytes <= 0) return p.low_budget;
    // channel_keys: the exact staging area of one block (fp16 K and V rows) is held too
    const double staging = p.channel_keys ? 32.0 * 2 * 2 * head_dim : 0.0;
    const double rest = static_cast<double>(p.bytes) - high_tier_bytes(p, head_dim) - staging;
    const double per = p.channel_keys ? mixed_block_token_bytes(low_config(p, head_dim), sizeof(State))
                                      : quant_token_bytes(low_config(p, head_dim));
    return rest <= 0 ? 0 : static_cast<std::int64_t>(std::floor(rest / per));
  }
  static evict::TierBudget tier_budget(const Params& p, int head_dim) {
    evict::TierBudget b;
    b.high_tokens = p.budget;
    b.low_tokens = low_tokens(p, head_dim);
    return b;
  }
  static evict::Protection protection(const Params& p) { return evict::Protection{p.selector.n_sink, p.selector.n_recent}; }

  // kErrorInvalidArgument for bad bits/budgets, kErrorUnsupportedHeadDim for head_dim,
  // kErrorCapacityExceeded for a High budget over the capacity.
  static Status check(const Params& p, int head_dim, std::int64_t capacity) {
    if (p.high_bits != 16 && p.high_bits != 8) return Status::kErrorInvalidArgument;
    if (p.low_bits != 2 && p.low_bits != 3 && p.low_bits != 4) return Status::kErrorInvalidArgument;
    MEMATTN_RETURN_IF_ERROR(low_config(p, head_dim).validate());
    if (p.budget < 1) return Status::kErrorInvalidArgument;
    if (p.budget > capacity) return Status::kErrorCapacityExceeded;
    if (p.selector.n_sink < 0 || p.selector.n_recent < 0) return Status::kErrorInvalidArgument;
    if (static_cast<std::int64_t>(p.selector.n_sink) + p.selector.n_recent > p.budget) return Status::kErrorInvalidArgument;
    if (p.low_budget < -1 || p.bytes < 0 || (p.bytes > 0 && p.low_budget != -1)) return Status::kErrorInvalidArgument;
    if (p.bytes > 0 && static_cast<double>(p.bytes) < high_tier_bytes(p, head_dim))
      return Status::kErrorInvalidArgument;
    if constexpr (std::is_same<Scorer, evict::PersistCount>::value) {
      if (p.scorer.history < 1 || p.scorer.history > 64) return Status::kErrorInvalidArgument;
    }
    return Status::kSuccess;
  }

  // Scorer hooks (the evicting policy's, with a matching Params).
  static typename ScorePolicy::Params score_params(const Params& p) {
    typename ScorePolicy::Params s;
    s.budget = p.budget;
    s.scorer = p.scorer;
    return s;
  }
};

using MiKV = Mixed<evict::AccumAttn>;

// MiKV defaults: H2O scores, 4 sinks, recent = budget / 2 (H2O's heavy:recent 1:1), fp16 High,
// 2-bit Low, nothing evicted.
inline MiKV::Params mikv_params(std::int64_t budget = 256, std::int64_t n_recent = -1) {
  MiKV::Params p;
  p.budget = budget;
  p.selector.n_sink = 4;
  p.selector.n_recent = static_cast<std::int32_t>(n_recent < 0 ? budget / 2 : n_recent);
  return p;
}

}  // namespace quant
MEMATTN_NAMESPACE_END
