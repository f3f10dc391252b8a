// fp64 reference of the fused token-eviction scores (spec eviction.md §4.3) for one decode step of
// fp16 q [B, Tq, Hq, D] over a head-major fp16 cache k [B, Hkv, L, D] with per-sequence lengths
// and an optional window: the raw logits tau q.k of every visible key, the rows' LSE, then per key
// the H2O / A2SF accumulation (gamma; GQA reduce 0 mean, 1 max, 2 sum) and the Scissorhands history
// bits from the states acc0 / hist0. Counts the mismatches of a run's logits (rows [B, Hkv, Tq G,
// L]), accumulators and histories; keys past a sequence must keep their state. Used by the GPU
// test and the emulated one.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "memattn/core/dtype.hpp"

namespace memattn_test {

struct ScoreShape {
  int B, Hkv, G, D, L, Tq, window;
};

struct ScoreMismatches {
  int logits = 0, acc = 0, hist = 0;
};

inline ScoreMismatches check_scores(const ScoreShape& c, const std::vector<memattn::Half>& q, const std::vector<memattn::Half>& k,
                                    const std::vector<std::int32_t>& lens, const std::vector<float>& acc0,
                                    const std::vector<std::uint64_t>& hist0, const std::vector<float>& logits,
                                    const std::vector<float>& acc, const std::vector<std::uint64_t>& hist, int reduce, float gamma,
                                    bool check_logits, double acc_tol = 1e-4) {
  ScoreMismatches bad;
  const int Hq = c.Hkv * c.G, rows = c.Tq * c.G;
  const double tau = 1.0 / std::sqrt(static_cast<double>(c.D));
  for (int b = 0; b < c.B; ++b) {
    const int len = lens[static_cast<std::size_t>(b)];
    for (int h = 0; h < c.Hkv; ++h) {
      // logits and lse of every row in fp64
      std::vector<double> s(static_cast<std::size_t>(rows) * len, -INFINITY), l(static_cast<std::size_t>(rows));
      for (int f = 0; f < rows; ++f) {
        const int t = f / c.G, hq = h * c.G + f % c.G, pos = len - c.Tq + t;
        const int lo = c.window > 0 ? std::max(0, pos - c.window + 1) : 0;
        double mx = -INFINITY;
        for (int j = lo; j <= pos; ++j) {
          double d = 0;
          for (int e = 0; e < c.D; ++e)
            d += static_cast<double>(memattn::to_float(q[((static_cast<std::size_t>(b) * c.Tq + t) * Hq + hq) * c.D + e])) *
                 memattn::to_float(k[((static_cast<std::size_t>(b) * c.Hkv + h) * c.L + j) * c.D + e]);
          s[static_cast<std::size_t>(f) * len + j] = d * tau;
          mx = std::max(mx, d * tau);
        }
        double sum = 0;
        for (int j = lo; j <= pos; ++j) sum += std::exp(s[static_cast<std::size_t>(f) * len + j] - mx);
        l[static_cast<std::size_t>(f)] = mx + std::log(sum);
        for (int j = lo; j <= pos && check_logits; ++j) {
          const double g = logits[((static_cast<std::size_t>(b) * c.Hkv + h) * rows + f) * c.L + j];
          if (!(std::fabs(g - s[static_cast<std::size_t>(f) * len + j]) <= 2e-3 * (1 + std::fabs(g)))) ++bad.logits;
        }
      }
      for (int j = 0; j < len; ++j) {
        double ref = acc0[(static_cast<std::size_t>(b) * c.Hkv + h) * c.L + j];
        std::uint64_t href = hist0[(static_cast<std::size_t>(b) * c.Hkv + h) * c.L + j];
        bool ambiguous = false;
        for (int t = 0; t < c.Tq; ++t) {
          const int pos = len - c.Tq + t, lo = c.window > 0 ? std::max(0, pos - c.window + 1) : 0;
          if (j > pos || j < lo) continue;
          double pbar = 0;
          for (int g = 0; g < c.G; ++g) {
            const int f = t * c.G + g;
            const double pr = std::exp(s[static_cast<std::size_t>(f) * len + j] - l[static_cast<std::size_t>(f)]);
            pbar = g == 0 ? pr : (reduce == 1 ? std::max(pbar, pr) : pbar + pr);
          }
          if (reduce == 0) pbar /= c.G;
          ref = gamma * ref + pbar;
          const double thr = 1.0 / (pos - lo + 1);
          ambiguous = ambiguous || std::fabs(pbar - thr) <= 1e-3 * thr;
          href = (href << 1) | (pbar < thr ? 1u : 0u);
        }
        const std::size_t at = (static_cast<std::size_t>(b) * c.Hkv + h) * c.L + j;
        if (!(std::fabs(acc[at] - ref) <= acc_tol * std::fabs(ref) + 1e-6)) ++bad.acc;
        if (!ambiguous && hist[at] != href) ++bad.hist;
      }
      // keys past the sequence keep their state
      for (int j = len; j < c.L; ++j) {
        const std::size_t at = (static_cast<std::size_t>(b) * c.Hkv + h) * c.L + j;
        if (acc[at] != acc0[at] || hist[at] != hist0[at]) ++bad.acc;
      }
    }
  }
  return bad;
}

}  // namespace memattn_test
