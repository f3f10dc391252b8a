// Random segment sets for the selection tests (the GPU test and the emulated one): S segments of
// `stride` slots, each with 1..stride live slots (the rest NaN padding), increasing distinct
// positions, scores in one of four modes (0 random, 1 all equal, 2 few levels with +-0 / -inf,
// 3 denormals), random sink / recent protection and tie rule, budgets of 1, above the length, or
// random; optionally retention priorities (1 in 7 slots: hard pins and soft levels).
#pragma once

#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "memattn/evict/policy.hpp"

namespace memattn_test {

struct SelectCase {
  int S = 0;
  std::int64_t stride = 0;
  std::vector<float> scores;
  std::vector<std::int32_t> pos, len, budget, tcur;
  std::vector<std::uint8_t> prio;  // empty without priorities
  memattn::evict::Protection protect;
  memattn::evict::TieBreak tie = memattn::evict::TieBreak::kPreferEarlier;
};

inline SelectCase make_select_case(std::mt19937& rng, int S, std::int64_t stride, int mode, bool with_prio) {
  namespace evict = memattn::evict;
  SelectCase c;
  c.S = S;
  c.stride = stride;
  const std::size_t total = static_cast<std::size_t>(S * stride);
  c.scores.assign(total, std::numeric_limits<float>::quiet_NaN());
  c.pos.assign(total, 0);
  c.len.resize(static_cast<std::size_t>(S));
  c.budget.resize(static_cast<std::size_t>(S));
  c.tcur.resize(static_cast<std::size_t>(S));
  if (with_prio) c.prio.assign(total, 0);
  c.protect.n_sink = static_cast<std::int32_t>(rng() % 5);
  c.protect.n_recent = static_cast<std::int32_t>(rng() % 40);
  c.tie = (rng() & 1) ? evict::TieBreak::kPreferLater : evict::TieBreak::kPreferEarlier;
  for (int s = 0; s < S; ++s) {
    const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % stride);
    c.len[static_cast<std::size_t>(s)] = static_cast<std::int32_t>(n);
    std::int32_t p = static_cast<std::int32_t>(rng() % 7);
    for (std::int64_t j = 0; j < n; ++j) {
      const std::size_t i = static_cast<std::size_t>(s * stride + j);
      c.pos[i] = p;
      p += 1 + static_cast<std::int32_t>(rng() % 3);
      float x = std::uniform_real_distribution<float>(-5.f, 5.f)(rng);
      if (mode == 1) x = 0.25f;
      if (mode == 2) {
        const int r = static_cast<int>(rng() % 4);
        x = r == 0 ? 0.f : r == 1 ? -0.f : r == 2 ? -std::numeric_limits<float>::infinity() : 1.f;
      }
      if (mode == 3) x = static_cast<float>(rng() % 5) * 1e-45f;
      c.scores[i] = x;
      if (with_prio && rng() % 7 == 0) c.prio[i] = static_cast<std::uint8_t>(rng() % 3 == 0 ? 255 : 1 + rng() % 254);
    }
    c.tcur[static_cast<std::size_t>(s)] = c.pos[static_cast<std::size_t>(s * stride + n - 1)];
    const int pick = static_cast<int>(rng() % 4);  // k' = 0, k' = N, random
    c.budget[static_cast<std::size_t>(s)] =
        pick == 0 ? 1 : pick == 1 ? static_cast<std::int32_t>(n + 5) : 1 + static_cast<std::int32_t>(rng() % n);
  }
  return c;
}

}  // namespace memattn_test
