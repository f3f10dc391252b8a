// Token merging components of the eviction framework (spec eviction.md §2.1 Merger, §2.3 hook order,
// §3.8 D2O, §3.13 KVMerger, §5.6) and the two merging policies. Pure policy math; the CPU merge
// routines are in cpu/evict_merge.hpp, the CUDA ones in kernels/memattn/kernels/evict_merge.cuh.
//
// A Merger exports kSignals, a POD Params (spec defaults), check(Params), a per-segment
// SegmentState (NoMerge: empty) and two flags:
//   kGroupsBeforeSelect  the merger groups candidates before selection (KVMerger: a merge set
//                        competes for the budget as one unit, scored by the sum of its members'
//                        scores and represented by its pivot; the other members score -inf, so
//                        they are kept only when the budget exceeds the number of units)
//   merge                after selection, before compaction (§2.3): evicted rows are folded into
//                        kept rows in place (kept and evicted rows are disjoint), then the ordered
//                        gather compacts as usual.
// Positions: a merged row keeps its target's (pivot's) original position (§3.8, §3.13), so
// position-based protection and the post-RoPE decode are unchanged.
//
//   NearestCos (D2O, §3.8, memattn default mode [lib]): each evicted e finds its most similar kept
//     row t(e) = argmax_k cos(K_e, K_k) (ties: lowest slot); the segment's threshold tau is the mean
//     of sim_e at its first eviction, then tau <- alpha*tau + beta*mean_e sim_e; entries with
//     sim_e >= tau merge with w_e = max(sim_e, 0): K_t <- (K_t + sum w_e K_e) / (1 + sum w_e), same
//     for V (the KVCache-Factory "weighted" normalisation). The reference keeps one tau per layer
//     averaged over heads (RG-15: different tokens per head); here tau is per (sequence, layer, KV
//     head), because segments compact independently and in parallel -- per-head decisions are the
//     spec's default mode. The target's accumulated score is left as is (the evicted scores go).
//   ConsecutiveGaussian (KVMerger, §3.13, [paper] details implemented as [lib]): candidates scanned
//     in slot (= position) order; j joins the current set if pos[j] = pos[prev] + 1 and
//     cos(K_j, K_prev) >= theta (prev = the set's last member), sets capped at max_set. Pivot =
//     member with the largest score (ties: earliest). When the pivot is kept, its evicted members
//     merge into it with g_i = exp(-|K_p - K_i|^2 / (2 sigma^2)), sigma^2 = mean of |K_p - K_i|^2
//     over those members (all g = 1 when it is 0), g_p = 1:
//     K_p <- sum g_i K_i / sum g_i (same for V); the pivot's state becomes the sum of the merged
//     members' scores (the merged row stands for the set's attention mass). The multiplicity bias
//     (log sum g added to the pivot's logit) is not implemented: the dense decode attention has no
//     per-token logit bias.
#pragma once

#include <cmath>
#include <cstdint>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"
#include "memattn/evict/policy.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace evict {

// D2O's token-level merger.
struct NearestCos {
  static constexpr std::uint32_t kSignals = kKeys | kValues;
  static constexpr bool kGroupsBeforeSelect = false;
  struct Params {
    float alpha = 0.5f;  // EMA weight of the previous threshold
    float beta = 0.5f;   // EMA weight of this step's mean similarity
  };
  struct SegmentState {
    float tau = 0.f;
    bool has_tau = false;
  };
  static Status check(const Params& p) {
    if (!(p.alpha >= 0.f) || !(p.beta >= 0.f) || !std::isfinite(p.alpha) || !std::isfinite(p.beta))
      return Status::kErrorInvalidArgument;
    return Status::kSuccess;
  }
  // The threshold after a compaction whose evicted entries have mean best similarity `mean_sim`.
  static float next_tau(const Params& p, SegmentState* s, float mean_sim) {
    s->tau = s->has_tau ? p.alpha * s->tau + p.beta * mean_sim : mean_sim;
    s->has_tau = true;
    return s->tau;
  }
};

// KVMerger's consecutive-set Gaussian merger.
struct ConsecutiveGaussian {
  static constexpr std::uint32_t kSignals = kKeys | kValues | kPositions;
  static constexpr bool kGroupsBeforeSelect = true;
  struct Params {
    float theta = 0.95f;  // cosine similarity of consecutive keys to join a set (see merge_policies.hpp)
    int max_set = 8;     // m_max: members per set, pivot included
  };
  struct SegmentState {};
  static Status check(const Params& p) {
    if (!(p.theta >= -1.f && p.theta <= 1.f) || p.max_set < 1) return Status::kErrorInvalidArgument;
    return Status::kSuccess;
  }
};

}  // namespace evict
MEMATTN_NAMESPACE_END
