// The Tiered selector on the CPU (evict/tiered.hpp): two deterministic top-k passes of
// cpu/evict_select.hpp's select_keep, first among the non-protected High tokens (who stays High),
// then among everything not High (who stays Low); the rest is evicted.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "memattn/core/status.hpp"
#include "memattn/cpu/evict_select.hpp"
#include "memattn/evict/tiered.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {

// Scratch for assign_tiers on n tokens (reused across calls).
struct TierScratch {
  std::vector<float> score;
  std::vector<std::int32_t> pos, keep, index;
  std::vector<std::uint64_t> keys;
};

// score[n] (higher = keep), pos[n] (distinct), current[n] (kHigh or kLow), t_cur = newest position.
// out[n]: the new tiers. NaN among ranked scores -> kErrorNonFinite, out untouched.
inline Status assign_tiers(const float* score, const std::int32_t* pos, const evict::Tier* current, std::int64_t n,
                           std::int32_t t_cur, const evict::Protection& protect, evict::TieBreak tie,
                           evict::TierBudget budget, TierScratch* sc, evict::Tier* out) {
  using evict::Tier;
  if (n < 0) return Status::kErrorInvalidArgument;
  if (n > 0 && (score == nullptr || pos == nullptr || current == nullptr || out == nullptr || sc == nullptr))
    return Status::kErrorNullPointer;
  const std::size_t N = static_cast<std::size_t>(n);
  sc->score.resize(N);
  sc->pos.resize(N);
  sc->keep.resize(N);
  sc->index.resize(N);
  sc->keys.resize(N);
  std::vector<Tier> next(current, current + n);
  // Pass 1: who stays High among the non-protected High tokens.
  std::int64_t protected_high = 0, m = 0;
  for (std::int64_t j = 0; j < n; ++j) {
    if (current[j] != Tier::kHigh && current[j] != Tier::kLow) return Status::kErrorInvalidArgument;
    if (current[j] != Tier::kHigh) continue;
    if (evict::is_protected(pos[j], t_cur, protect)) {
      ++protected_high;
      continue;
    }
    sc->score[static_cast<std::size_t>(m)] = score[j];
    sc->pos[static_cast<std::size_t>(m)] = pos[j];
    sc->index[static_cast<std::size_t>(m++)] = static_cast<std::int32_t>(j);
  }
  auto top = [&](std::int64_t count, std::int64_t k, Tier loser) -> Status {
    // Among the first `count` gathered tokens, the top k keep their tier, the others get `loser`.
    if (k < 0 || k >= count) return Status::kSuccess;
    std::int64_t kept = 0;
    if (k > 0) {
      MEMATTN_RETURN_IF_ERROR(select_keep(sc->score.data(), sc->pos.data(), count, k, t_cur, evict::Protection{0, 0},
                                          tie, sc->keys.data(), sc->keep.data(), &kept));
    } else {
      for (std::int64_t i = 0; i < count; ++i)
        if (sc->score[static_cast<std::size_t>(i)] != sc->score[static_cast<std::size_t>(i)]) return Status::kErrorNonFinite;
    }
    std::int64_t r = 0;
    for (std::int64_t i = 0; i < count; ++i) {
      if (r < kept && sc->keep[static_cast<std::size_t>(r)] == i) {
        ++r;
        continue;
      }
      next[static_cast<std::size_t>(sc->index[static_cast<std::size_t>(i)])] = loser;
    }
    return Status::kSuccess;
  };
  if (budget.high_tokens >= 0)
    MEMATTN_RETURN_IF_ERROR(top(m, std::max<std::int64_t>(0, budget.high_tokens - protected_high), Tier::kLow));
  // Pass 2: who stays Low among everything not High now.
  m = 0;
  for (std::int64_t j = 0; j < n; ++j) {
    if (next[static_cast<std::size_t>(j)] != Tier::kLow) continue;
    sc->score[static_cast<std::size_t>(m)] = score[j];
    sc->pos[static_cast<std::size_t>(m)] = pos[j];
    sc->index[static_cast<std::size_t>(m++)] = static_cast<std::int32_t>(j);
  }
  if (budget.low_tokens >= 0) MEMATTN_RETURN_IF_ERROR(top(m, budget.low_tokens, Tier::kEvict));
  std::copy(next.begin(), next.end(), out);
  return Status::kSuccess;
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
