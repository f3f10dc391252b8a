// D2O's layer budgets from attention density (spec eviction.md §3.8, §4.2, §2.6): the
// VarianceSoftmax allocator, scope kAllLayers (it needs every layer's column sums).
//
//   v[h]   = Var_j(col[h, j])                     fp64 population variance of a KV head's column sums
//   ṽ[h]   = (v[h] - min_h v) / (max_h v - min_h v + 1e-6)        min-max over the layer's heads
//   v_l    = mean_h ṽ[h]                          in [0, 1]
//   w_l    = softmax_l(-v_l)                      lower variance -> more budget
// Budgets [lib]: the reference keeps a ratio of the prompt per layer (hh_l, recent_l) and leaves
// layers 0, 1 and L-1 uncompressed. memattn budgets are exact token counts with a fixed total, so
//   C_l = F + share_l,   share_l = L*(C - F)*w_l rounded by largest remainder (ties: lower layer),
// F = the protected tokens every segment keeps anyway (sinks + recent): sum_l C_l = L*C exactly and
// no layer falls below its protected set. Protected layers (the first `protect_first` and last
// `protect_last`) cannot stay uncompressed under a fixed total (a streaming cache would grow without
// bound), so they get the largest possible weight instead (v_l := 0). Protection applies only when
// L > protect_first + protect_last. Column sums are the H2O accumulation (GQA-mean probabilities of
// every query so far, §4.2); the cache plans once per sequence, at the first chunk end that takes
// the sequence over budget C (the reference: prompt + 1 at the first decode step), and keeps the
// plan until reset.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"
#include "memattn/evict/policy.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace evict {

struct VarianceSoftmax {
  static constexpr Scope kScope = Scope::kAllLayers;
  static constexpr std::uint32_t kSignals = kPrefillLse | kDecodeProbs;
  struct Params {
    int protect_first = 2;  // layers 0, 1 [code]
    int protect_last = 1;   // layer L-1 [code]
  };
  static Status check(const Params& p) {
    return p.protect_first < 0 || p.protect_last < 0 ? Status::kErrorInvalidArgument : Status::kSuccess;
  }
  // Before a sequence's plan exists every layer gets C.
  static std::int64_t budget(const Params&, int, int, std::int64_t, std::int64_t C, std::int64_t) { return C; }

  // fp64 population variance of n column sums (two-pass).
  static double head_variance(const float* col, std::int64_t n) {
    if (n <= 0) return 0.0;
    double mean = 0;
    for (std::int64_t j = 0; j < n; ++j) mean += col[j];
    mean /= static_cast<double>(n);
    double var = 0;
    for (std::int64_t j = 0; j < n; ++j) var += (col[j] - mean) * (col[j] - mean);
    return var / static_cast<double>(n);
  }
  // v_l from the layer's per-head variances.
  static double layer_density(const double* head_var, int heads) {
    const double lo = *std::min_element(head_var, head_var + heads);
    const double hi = *std::max_element(head_var, head_var + heads);
    double s = 0;
    for (int h = 0; h < heads; ++h) s += (head_var[h] - lo) / (hi - lo + 1e-6);
    return s / heads;
  }
  // Layer budgets out[L] from densities v[L]; floor = protected tokens per segment.
  static Status plan(const Params& p, const double* v, int layers, std::int64_t C, std::int64_t floor,
                     std::int64_t* out) {
    if (v == nullptr || out == nullptr) return Status::kErrorNullPointer;
    if (layers < 1 || C < 1 || floor < 0) return Status::kErrorInvalidArgument;
    floor = std::min(floor, C);
    const bool protect = layers > p.protect_first + p.protect_last;
    std::vector<double> w(static_cast<std::size_t>(layers));
    double mx = -1e300, sum = 0;
    for (int l = 0; l < layers; ++l) {
      const bool prot = protect && (l < p.protect_first || l >= layers - p.protect_last);
      w[static_cast<std::size_t>(l)] = prot ? 0.0 : -v[l];
      mx = std::max(mx, w[static_cast<std::size_t>(l)]);
    }
    for (double& x : w) sum += (x = std::exp(x - mx));
    const std::int64_t H = static_cast<std::int64_t>(layers) * (C - floor);
    std::int64_t given = 0;
    std::vector<double> frac(static_cast<std::size_t>(layers));
    for (int l = 0; l < layers; ++l) {
      const double share = static_cast<double>(H) * w[static_cast<std::size_t>(l)] / sum;
      const std::int64_t base = static_cast<std::int64_t>(std::floor(share));
      out[l] = floor + base;
      given += base;
      frac[static_cast<std::size_t>(l)] = share - static_cast<double>(base);
    }
    for (; given > H; --given) {  // rounding overshoot (cannot happen in exact arithmetic)
      int worst = 0;
      for (int l = 1; l < layers; ++l)
        if (frac[static_cast<std::size_t>(l)] < frac[static_cast<std::size_t>(worst)] && out[l] > floor) worst = l;
      --out[worst];
    }
    for (std::int64_t r = H - given; r > 0; --r) {  // largest remainder, ties to the lower layer
      int best = 0;
      for (int l = 1; l < layers; ++l)
        if (frac[static_cast<std::size_t>(l)] > frac[static_cast<std::size_t>(best)]) best = l;
      ++out[best];
      frac[static_cast<std::size_t>(best)] = -1.0;
    }
    return Status::kSuccess;
  }
};

}  // namespace evict
MEMATTN_NAMESPACE_END
