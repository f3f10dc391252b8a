// WindowKV (spec eviction.md §3.10, arXiv 2503.17922, reference optim996/WindowKV
// models/compress_utils.py::WindowKVCluster): scores of fixed-size consecutive windows from a
// suffix observation window, one index set per layer group, arithmetic group budgets.
//
// Score: col_h[j] = sum over the last s (suffix) queries of p (SnapKV window column sums, GQA-
// reduced per KV head, cpu/evict_scores.hpp window_colsum). The review part [0, n_rev) (slots
// before the protected suffix) is cut into windows of R tokens (the last may be partial):
//   average: mean of col over all KV heads and tokens of the window;
//   max:     per head the top max(1, min(R/2, len)) values of the window, mean over all of them.
// (Per sequence: the reference also averages over the batch, RG-06.)
// Keep rule [lib, RG-17 default]: whole windows in score order, then the best tokens (by head-mean
// col) of the next window, so a segment holds exactly C tokens (the reference keeps only whole
// windows and misses C by up to R - 1). Encoded as one fp32 score per slot,
//   s_j = -(rank(window(j)) * R + rank of j inside its window)      (ranks from 0, ties by index)
// which the common top-k (§5.1) turns into that keep set; output stays chronological (RG-02).
// Index sharing: the keep set is computed at the first layer of each group of `shared` layers
// (its queries, all its KV heads) and applied to every head of every layer of the group.
// Budgets (GroupArithmetic, beta = 14) on the review budget c = C - s (§2.5: C = budget_l + s):
//   last = floor(c*shared/beta), first = 2c - last, step = floor((first - last)/(n_groups - 1)),
//   group g: first - g*step, the last group exactly `last`.
// [lib] n_groups = ceil(L/shared) (a shorter last group when L mod shared != 0) and n_groups = 1
// gives every layer C; the reference divides by zero / leaves the list short there (RG-17). The
// task label (BERT classifier in the reference) is a parameter: mode avg (s = 16) or max (s = 32).
#pragma once

#include <algorithm>
#include <functional>
#include <cstdint>
#include <numeric>
#include <vector>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"
#include "memattn/evict/policy.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace evict {

enum class WindowMode : int { kAverage = 0, kMax = 1 };

struct WindowBlock {
  static constexpr std::uint32_t kSignals = kWindowQueries | kExternalTable;  // table: the task label (mode)
  static constexpr Granularity kGranularity = Granularity::kPerLayerGroup;
  static constexpr StateKind kState = StateKind::kNone;
  static constexpr bool kNeedsDecodeProbs = false;
  static constexpr bool kNeedsWindowQueries = true;
  struct Params {
    int window = 16;  // suffix s
    int block = 8;    // R
    WindowMode mode = WindowMode::kAverage;
    GroupReduce reduce = GroupReduce::kMean;
  };
  static Status check(const Params& p) {
    return p.window >= 1 && p.block >= 1 ? Status::kSuccess : Status::kErrorInvalidArgument;
  }

  // col: [heads][N] column sums (row stride N); slots [0, n_rev) are the review part. Writes out[j]
  // for j < n_rev (the encoded rank score above); tok/wscore/order are reusable scratch.
  static void unit_scores(const Params& p, const float* col, std::int64_t heads, std::int64_t N, std::int64_t n_rev,
                          float* out, std::vector<float>& tok, std::vector<float>& wscore,
                          std::vector<std::int64_t>& order) {
    const std::int64_t R = p.block;
    const std::int64_t nw = (n_rev + R - 1) / R;
    tok.assign(static_cast<std::size_t>(n_rev), 0.f);
    for (std::int64_t j = 0; j < n_rev; ++j) {
      double s = 0;
      for (std::int64_t h = 0; h < heads; ++h) s += col[h * N + j];
      tok[static_cast<std::size_t>(j)] = static_cast<float>(s / static_cast<double>(heads));
    }
    wscore.assign(static_cast<std::size_t>(nw), 0.f);
    std::vector<float> vals;
    for (std::int64_t w = 0; w < nw; ++w) {
      const std::int64_t a = w * R, b = std::min(n_rev, a + R), len = b - a;
      double s = 0;
      std::int64_t cnt = 0;
      if (p.mode == WindowMode::kAverage) {
        for (std::int64_t h = 0; h < heads; ++h)
          for (std::int64_t j = a; j < b; ++j) s += col[h * N + j];
        cnt = heads * len;
      } else {
        const std::int64_t kk = std::max<std::int64_t>(1, std::min<std::int64_t>(R / 2, len));
        for (std::int64_t h = 0; h < heads; ++h) {
          vals.assign(col + h * N + a, col + h * N + b);
          std::partial_sort(vals.begin(), vals.begin() + kk, vals.end(), std::greater<float>());
          for (std::int64_t i = 0; i < kk; ++i) s += vals[static_cast<std::size_t>(i)];
        }
        cnt = heads * kk;
      }
      wscore[static_cast<std::size_t>(w)] = static_cast<float>(s / static_cast<double>(cnt));
    }
    // window ranks (score desc, earlier first on ties)
    order.resize(static_cast<std::size_t>(nw));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::int64_t x, std::int64_t y) {
      return wscore[static_cast<std::size_t>(x)] > wscore[static_cast<std::size_t>(y)];
    });
    std::vector<std::int64_t> wrank(static_cast<std::size_t>(nw));
    for (std::int64_t r = 0; r < nw; ++r) wrank[static_cast<std::size_t>(order[static_cast<std::size_t>(r)])] = r;
    // token ranks inside each window
    std::vector<std::int64_t> idx;
    for (std::int64_t w = 0; w < nw; ++w) {
      const std::int64_t a = w * R, b = std::min(n_rev, a + R);
      idx.resize(static_cast<std::size_t>(b - a));
      std::iota(idx.begin(), idx.end(), a);
      std::stable_sort(idx.begin(), idx.end(), [&](std::int64_t x, std::int64_t y) {
        return tok[static_cast<std::size_t>(x)] > tok[static_cast<std::size_t>(y)];
      });
      for (std::int64_t r = 0; r < b - a; ++r)
        out[idx[static_cast<std::size_t>(r)]] = -static_cast<float>(wrank[static_cast<std::size_t>(w)] * R + r);
    }
  }
};

struct GroupArithmetic {
  static constexpr Scope kScope = Scope::kPerLayer;
  static constexpr std::uint32_t kSignals = 0;
  struct Params {
    int beta = 14;
    int shared = 8;  // layers per group
  };
  static int group_size(const Params& p, int /*layers*/) { return p.shared; }
  static std::int64_t budget(const Params& p, int layer, int layers, std::int64_t /*P*/, std::int64_t C,
                             std::int64_t w) {
    const std::int64_t c = C - w;
    const std::int64_t groups = (layers + p.shared - 1) / p.shared;
    if (groups <= 1 || c <= 0) return C;
    const std::int64_t last = c * p.shared / p.beta;
    const std::int64_t first = 2 * c - last;
    const std::int64_t step = (first - last) / (groups - 1);
    const std::int64_t g = layer / p.shared;
    return (g == groups - 1 ? last : first - g * step) + w;
  }
};

using WindowKV = EvictionPolicy<WindowBlock, GroupArithmetic, TopK<Granularity::kPerLayerGroup>, NoMerge, AtPrefillEnd>;

// Reference defaults: R = 8, shared = 8, beta = 14; "average" with s = 16 (non-QA), "max" with s = 32 (QA).
inline WindowKV::Params windowkv_params(std::int64_t budget = 2048, WindowMode mode = WindowMode::kAverage) {
  WindowKV::Params p;
  p.budget = budget;
  p.scorer.mode = mode;
  p.scorer.window = mode == WindowMode::kMax ? 32 : 16;
  return p;
}

}  // namespace evict
MEMATTN_NAMESPACE_END
