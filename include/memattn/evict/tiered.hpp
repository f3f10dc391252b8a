// The `Tiered` selector (spec eviction.md §2.8, quantization.md §8.3): instead of a keep set it maps
// every token of a segment to keep-high, keep-low or evict, for mixed-precision caches (MiKV).
// Rules, per (sequence, KV head):
//   1. monotone: the new tier is never more precise than the current one (High -> Low -> Evict);
//   2. exact budgets: #High <= high_tokens and #Low <= low_tokens (< 0: unlimited), except that
//      protected tokens (sinks, recent window; evict/policy.hpp Protection) always stay High;
//   3. deterministic: candidates are ranked by the 64-bit (score, position) key of evict/key.hpp.
// Decision (cpu/evict_tiered.hpp implements it, tests hold a sort-based reference):
//   High  = protected High tokens + the top (high_tokens - #protected) non-protected High tokens;
//   Low   = the top low_tokens among the remaining tokens (current Low + just demoted);
//   Evict = the rest.
// Slots freed by a demotion are not refilled by promotion (lost precision cannot come back).
#pragma once

#include <cstdint>

#include "memattn/core/config.hpp"
#include "memattn/evict/key.hpp"
#include "memattn/evict/policy.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace evict {

enum class Tier : std::uint8_t { kHigh = 0, kLow = 1, kEvict = 2 };

struct TierBudget {
  std::int64_t high_tokens = -1;  // tokens kept at high precision (protected included); < 0 = unlimited
  std::int64_t low_tokens = -1;   // tokens kept at low precision; < 0 = unlimited
};

// Selector component: granularity per KV head, needs positions; params = protection + tie rule.
struct Tiered {
  static constexpr Granularity kGranularity = Granularity::kPerKVHead;
  static constexpr std::uint32_t kSignals = kPositions;
  struct Params {
    std::int32_t n_sink = 4;  // MiKV mode: 4 sinks forced High (quantization.md §8.3)
    std::int32_t n_recent = 0;
    TieBreak tie = TieBreak::kPreferEarlier;
  };
};

}  // namespace evict
MEMATTN_NAMESPACE_END
