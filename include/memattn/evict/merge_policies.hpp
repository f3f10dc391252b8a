// The merging policies (spec eviction.md §3.8, §3.13) as compositions of the framework:
//
//   D2O      = AccumAttn (H2O scores) + VarianceSoftmax (layer budgets) + TopK + NearestCos + OnOverflow
//   KVMerger = AccumAttn (pivot = highest accumulated attention) + Uniform + TopK
//              + ConsecutiveGaussian + OnOverflow
// Defaults: D2O forces the first 4 tokens in [code] and splits heavy:recent 1:1
// (hh_ratio = recent_ratio = 0.1) -> n_recent = budget/2; alpha = beta = 0.5.
// KVMerger: same protection as H2O (recent = budget/2, no sinks) so that the two differ only by
// the merge; theta and max_set are [lib] (the paper publishes no values). theta = 0.95 from data:
// SmolLM2-135M post-RoPE keys (WikiText-2, 512 tokens) have consecutive-key cosines with median
// 0.73-0.90 by layer (random pairs: 0.46-0.66) and >= 0.8 for 34-95% of pairs, so theta = 0.8
// merges most of a middle layer into sets of max_set and loses to H2O (WikiText-2 ppl 27.35 vs
// 24.73 at budget 256); at 0.95 (1-11% of pairs) it is level with H2O there (24.76) and ahead
// of it on stories260K at budgets 64/128.
#pragma once

#include <cstdint>

#include "memattn/evict/merge.hpp"
#include "memattn/evict/policy.hpp"
#include "memattn/evict/variance_softmax.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace evict {

using D2O = EvictionPolicy<AccumAttn, VarianceSoftmax, TopK<>, NearestCos, OnOverflow>;
using KVMerger = EvictionPolicy<AccumAttn, Uniform, TopK<>, ConsecutiveGaussian, OnOverflow>;

inline D2O::Params d2o_params(std::int64_t budget = 256, std::int64_t n_recent = -1, std::int32_t n_sink = 4) {
  D2O::Params p;
  p.budget = budget;
  p.selector.n_sink = n_sink;
  p.selector.n_recent = static_cast<std::int32_t>(n_recent < 0 ? budget / 2 : n_recent);
  return p;
}

inline KVMerger::Params kvmerger_params(std::int64_t budget = 256, std::int64_t n_recent = -1) {
  KVMerger::Params p;
  p.budget = budget;
  p.selector.n_recent = static_cast<std::int32_t>(n_recent < 0 ? budget / 2 : n_recent);
  return p;
}

}  // namespace evict
MEMATTN_NAMESPACE_END
