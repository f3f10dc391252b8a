// Token-merging cases for the GPU test and the emulated one (tests/emu): fp16 key / value rows in
// consecutive runs around a shared random direction, and the merged rows' tolerance (one fp16
// rounding: both sides accumulate in fp64, in different orders); D2O's keep lists and its CPU round
// (gpu/evict_merge_cpu_bridge.hpp), KVMerger's ragged segments and the check of the kernels'
// pivots, set scores, keep lists and merged rows against the CPU path.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "gpu/evict_merge_cpu_bridge.hpp"
#include "memattn/core/dtype.hpp"

namespace memattn_test {

// Consecutive runs of `run` keys around a shared random direction, fp16.
inline std::vector<memattn::Half> clustered(std::int64_t rows, std::int64_t D, int run, float noise, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<memattn::Half> k(static_cast<std::size_t>(rows * D));
  std::vector<float> base(static_cast<std::size_t>(D));
  for (std::int64_t j = 0; j < rows; ++j) {
    if (j % run == 0)
      for (auto& b : base) b = nd(rng);
    for (std::int64_t d = 0; d < D; ++d)
      k[static_cast<std::size_t>(j * D + d)] = memattn::from_float<memattn::Half>(base[static_cast<std::size_t>(d)] + noise * nd(rng));
  }
  return k;
}

inline void check_half_rows(const std::vector<memattn::Half>& got, const std::vector<memattn::Half>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    const double g = memattn::to_float(got[i]), w = memattn::to_float(want[i]);
    INFO("element " << i);
    REQUIRE(std::abs(g - w) <= 2e-3 * std::abs(w) + 1e-4);
  }
}

// D2O's keep lists of S segments (slots [s * stride, + count[s])): token 0 and about a third of the
// rest of each length.
inline void random_keep(const std::vector<std::int32_t>& len, std::int64_t stride, std::mt19937& rng, std::vector<std::int32_t>* keep,
                        std::vector<std::int32_t>* count) {
  const int S = static_cast<int>(len.size());
  keep->assign(static_cast<std::size_t>(S * stride), 0);
  count->assign(static_cast<std::size_t>(S), 0);
  for (int s = 0; s < S; ++s) {
    std::int32_t c = 0;
    for (std::int32_t j = 0; j < len[static_cast<std::size_t>(s)]; ++j)
      if (rng() % 3 == 0 || j == 0) (*keep)[static_cast<std::size_t>(s * stride + c++)] = j;
    (*count)[static_cast<std::size_t>(s)] = c;
  }
}

// One D2O round on the CPU (alpha 0.3, beta 0.7) over every segment with a count >= 0: k, v merged
// in place, tau / has the EMA thresholds.
inline void cpu_nearest_cos_round(std::vector<memattn::Half>* k, std::vector<memattn::Half>* v, int D, std::int64_t stride,
                                  const std::vector<std::int32_t>& len, const std::vector<std::int32_t>& keep,
                                  const std::vector<std::int32_t>& count, std::vector<float>* tau, std::vector<bool>* has) {
  for (std::size_t s = 0; s < len.size(); ++s) {
    if (count[s] < 0) continue;
    float t = (*tau)[s];
    bool h = (*has)[s];
    const std::int64_t o = static_cast<std::int64_t>(s) * stride;
    REQUIRE(cpu_merge_nearest_cos(0.3f, 0.7f, &t, &h, k->data() + o * D, v->data() + o * D, D, len[s], keep.data() + o, count[s]) ==
            memattn::Status::kSuccess);
    (*tau)[s] = t;
    (*has)[s] = h;
  }
}

// KVMerger's S ragged segments of `stride` slots: clustered keys (runs of 4), values, lengths in
// [20, stride), positions with a few gaps (they break sets), scores in [0, 3), budget a third.
struct KvMergerCase {
  int S, D;
  std::int64_t stride;
  std::vector<memattn::Half> k, v;
  std::vector<std::int32_t> len, pos, budget, tcur;
  std::vector<float> scores, state;
  KvMergerCase(int S_, int D_, std::int64_t stride_, std::mt19937& rng) : S(S_), D(D_), stride(stride_) {
    k = clustered(S * stride, D, 4, 0.2f, rng);
    v = clustered(S * stride, D, 1, 0.f, rng);
    len.resize(static_cast<std::size_t>(S));
    pos.assign(static_cast<std::size_t>(S * stride), 0);
    budget.resize(static_cast<std::size_t>(S));
    tcur.resize(static_cast<std::size_t>(S));
    scores.assign(static_cast<std::size_t>(S * stride), 0.f);
    for (int s = 0; s < S; ++s) {
      const std::int32_t n = 20 + static_cast<std::int32_t>(rng() % (stride - 20));
      len[static_cast<std::size_t>(s)] = n;
      budget[static_cast<std::size_t>(s)] = std::max(1, n / 3);
      std::int32_t p = 0;
      for (std::int32_t j = 0; j < n; ++j) {
        pos[static_cast<std::size_t>(s * stride + j)] = p;
        p += rng() % 10 == 0 ? 2 : 1;  // a few gaps break sets
        scores[static_cast<std::size_t>(s * stride + j)] = std::uniform_real_distribution<float>(0.f, 3.f)(rng);
      }
      tcur[static_cast<std::size_t>(s)] = p - 1;
    }
    state = scores;
  }
};

// The kernels' KVMerger outputs vs cpu_kvmerger_compact (theta 0.8) on the case's own copies:
// counts, pivots, set scores and keep lists identical, merged state within 1e-6, rows within one
// fp16 rounding.
inline void check_kvmerger(KvMergerCase& c, int max_set, const memattn::evict::Protection& pr, const std::vector<std::int32_t>& gcount,
                           const std::vector<std::int32_t>& gpivot, const std::vector<float>& gscores,
                           const std::vector<float>& gstate, const std::vector<std::int32_t>& gkeep,
                           const std::vector<memattn::Half>& gk, const std::vector<memattn::Half>& gv) {
  const std::int64_t stride = c.stride, D = c.D;
  std::vector<std::int32_t> pivot(static_cast<std::size_t>(c.S * stride), 0), keep(static_cast<std::size_t>(c.S * stride), 0);
  for (int s = 0; s < c.S; ++s) {
    INFO("segment " << s);
    const std::int64_t o = s * stride, n = c.len[static_cast<std::size_t>(s)];
    std::int64_t count = 0;
    REQUIRE(cpu_kvmerger_compact(0.8f, max_set, c.k.data() + o * D, c.v.data() + o * D, D, c.pos.data() + o, n,
                                 c.budget[static_cast<std::size_t>(s)], c.tcur[static_cast<std::size_t>(s)], pr, c.scores.data() + o,
                                 c.state.data() + o, pivot.data() + o, keep.data() + o, &count) == memattn::Status::kSuccess);
    REQUIRE(gcount[static_cast<std::size_t>(s)] == count);
    for (std::int64_t j = 0; j < n; ++j) {
      const std::size_t i = static_cast<std::size_t>(o + j);
      CHECK(gpivot[i] == pivot[i]);
      CHECK(gscores[i] == c.scores[i]);
      CHECK(gstate[i] == Approx(c.state[i]).epsilon(1e-6));
    }
    for (std::int64_t i = 0; i < count; ++i) CHECK(gkeep[static_cast<std::size_t>(o + i)] == keep[static_cast<std::size_t>(o + i)]);
  }
  check_half_rows(gk, c.k);
  check_half_rows(gv, c.v);
}

}  // namespace memattn_test
