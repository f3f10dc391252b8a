// Token eviction: the compile-time policy composition (spec eviction.md §2) and the reference
// policies' components (§3.1-3.5, §3.16). Pure policy math, no execution: the CPU cache
// (cpu/evict_kv_cache.hpp) and the CPU score/select kernels (cpu/evict_scores.hpp,
// cpu/evict_select.hpp) drive these components.
//
//   EvictionPolicy<Scorer, Allocator, Selector, Merger = NoMerge, Trigger = AtPrefillEnd>
//
// Every component exports kSignals (what the engine must provide), a POD Params with the spec's
// defaults, and (scorers) the per-token state it keeps, which compaction permutes with K and V.
// Policy-level hooks (all host, no allocation):
//   init_token(state, slot, key, D)            token written (KNorm computes its norm here)
//   on_decode_prob(state, slot, pbar, n_vis)   epilogue of the decode attention: GQA-reduced
//                                              probability p̄ of one query on slot (H2O, Scissorhands)
//   should_compact(N, C)                       trigger
//   budget(layer, layers, P, C)                allocator: tokens segment (seq, layer, h) keeps
//   protection(C)                              selector: sinks, recent window, observation window
//   score(state, pos, slot)                    scorer: fp32 score, higher = keep (state scorers)
//   Merger (evict/merge.hpp)                   after select, before the gather: evicted rows folded
//                                              into kept ones (kGroupsBeforeSelect: grouping first)
// Budgets are exact (§0.3.6): a compacted segment holds min(N, max(C, |protected|)) tokens.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"
#include "memattn/evict/key.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace evict {

// ---- traits (§2.2) -----------------------------------------------------------------------------

enum Signal : std::uint32_t {
  kPositions = 1u << 0,
  kKeys = 1u << 1,
  kValues = 1u << 2,
  kWindowQueries = 1u << 3,  // last w post-RoPE queries, per query head
  kProbeQueries = 1u << 4,
  kPrefillLse = 1u << 5,     // natural-log LSE of every prompt query
  kDecodeProbs = 1u << 6,    // p_j of the current query(ies), fused into the decode attention
  kTokenLogProbs = 1u << 7,
  kTokenIds = 1u << 8,
  kExternalTable = 1u << 9,
  kHostEvents = 1u << 10,
};

// Ordered from fine to coarse.
enum class Granularity : int { kPerKVHead = 0, kPerLayer = 1, kPerLayerGroup = 2, kPerSequence = 3 };
enum class Scope { kPerLayer, kAllLayers };
enum class PositionMode { kOriginal, kCacheRelative };
enum class GroupReduce : int { kMean = 0, kMax = 1, kSum = 2 };  // over the G query heads of a group (§2.4)
enum class PoolKind : int { kAvg = 0, kMax = 1 };

// Per-token state kinds a scorer may declare (§1.2); compaction moves them with K and V.
// kCustom: the scorer brings its own POD `State` and the hooks below (scorer_hooks).
enum class StateKind { kNone, kF32, kU64, kCustom };

// Generic scorer hooks (a scorer that declares `using State = ...` provides them, so new scorers
// live in their own headers instead of another is_same branch here):
//   static State init_state(int32_t pos)                                token written
//   static void on_prob(const Params&, State&, float pbar, int32_t t_query, int64_t n_visible)
//   static float score(const Params&, const State&, int32_t pos, int32_t t_cur)
//   static Status check(const Params&)                                  parameter validation
// Optional, detected separately:
//   static void on_chunk(const Params&, State* st, const int32_t* pos, int64_t first_new,
//                        int64_t size, const TokenSignals&)             chunk closed, before compaction
template <class S, class = void>
struct scorer_has_hooks : std::false_type {};
template <class S>
struct scorer_has_hooks<S, std::void_t<typename S::State>> : std::true_type {};

// Per-chunk engine signals handed to on_chunk hooks (the cache's ChunkSignals, policy-side view).
struct TokenSignals {
  const float* logprobs = nullptr;     // [count]: log p(x_j | x_<j); NaN where undefined (sequence start)
  const std::int32_t* ids = nullptr;   // [count] or nullptr
  std::int64_t count = 0;
  std::int64_t first_pos = 0;          // position of the chunk's first token
};
template <class S, class = void>
struct scorer_has_on_chunk : std::false_type {};
template <class S>
struct scorer_has_on_chunk<S, std::void_t<decltype(&S::on_chunk)>> : std::true_type {};
template <class S, class = void>
struct scorer_has_check : std::false_type {};
template <class S>
struct scorer_has_check<S, std::void_t<decltype(&S::check)>> : std::true_type {};

// Protected ranges (§1.3), by original position so they also hold under slot replacement:
// sink: pos < n_sink; recent (and observation window): pos > t_cur - n_recent.
struct Protection {
  std::int32_t n_sink = 0;
  std::int32_t n_recent = 0;
};

MEMATTN_HOST_DEVICE bool is_protected(std::int32_t pos, std::int32_t t_cur, const Protection& p) {
  return pos < p.n_sink || static_cast<std::int64_t>(pos) > static_cast<std::int64_t>(t_cur) - p.n_recent;
}

// GQA reduction step: acc is the running value after `g` heads, x the next head's value.
MEMATTN_HOST_DEVICE float group_combine(GroupReduce r, float acc, float x, int g) {
  if (g == 0) return x;
  return r == GroupReduce::kMax ? (x > acc ? x : acc) : acc + x;
}
MEMATTN_HOST_DEVICE float group_finish(GroupReduce r, float acc, int G) {
  return r == GroupReduce::kMean ? acc / static_cast<float>(G) : acc;
}

// ---- scorers -----------------------------------------------------------------------------------

// StreamingLLM (§3.1): positional. The spec writes s_j = -pos[j] and, in the same sentence,
// "the oldest middle token is evicted first"; with "higher = keep" that needs s_j = +pos[j]
// (newer = keep), which is what this scorer returns.
struct Positional {
  static constexpr std::uint32_t kSignals = kPositions;
  static constexpr Granularity kGranularity = Granularity::kPerSequence;
  static constexpr StateKind kState = StateKind::kNone;
  static constexpr bool kNeedsDecodeProbs = false;
  static constexpr bool kNeedsWindowQueries = false;
  struct Params {};
};

// H2O (§3.2) / A2SF: acc_j <- gamma * acc_j + p̄_{t,j}; prefill column sums come from the same
// update applied to every prompt query (chunked), decode adds one term per step.
struct AccumAttn {
  static constexpr std::uint32_t kSignals = kDecodeProbs | kPrefillLse;
  static constexpr Granularity kGranularity = Granularity::kPerKVHead;
  static constexpr StateKind kState = StateKind::kF32;
  static constexpr bool kNeedsDecodeProbs = true;
  static constexpr bool kNeedsWindowQueries = false;
  struct Params {
    float gamma = 1.f;  // 1 = H2O
    GroupReduce reduce = GroupReduce::kMean;
  };
};

// Scissorhands (§3.3, counting rule [unverified]/[lib]): hist_j <- hist_j << 1 | [p̄ < 1/N_t];
// s_j = -popcount(hist_j & mask(history)).
struct PersistCount {
  static constexpr std::uint32_t kSignals = kDecodeProbs;
  static constexpr Granularity kGranularity = Granularity::kPerKVHead;
  static constexpr StateKind kState = StateKind::kU64;
  static constexpr bool kNeedsDecodeProbs = true;
  static constexpr bool kNeedsWindowQueries = false;
  struct Params {
    int history = 32;  // w_h <= 64
    GroupReduce reduce = GroupReduce::kMean;
  };
};

// SnapKV (§3.4): column sums of the observation window's attention (GQA-reduced), then pooling.
struct WindowAttn {
  static constexpr std::uint32_t kSignals = kWindowQueries;
  static constexpr Granularity kGranularity = Granularity::kPerKVHead;
  static constexpr StateKind kState = StateKind::kNone;
  static constexpr bool kNeedsDecodeProbs = false;
  static constexpr bool kNeedsWindowQueries = true;
  struct Params {
    int window = 32;
    int kernel = 7;
    PoolKind pool = PoolKind::kMax;
    bool count_include_pad = true;  // avg pooling: reference parity (zero padding counted)
    GroupReduce reduce = GroupReduce::kMean;
  };
};

// KNorm (§3.16): s_j = -||k_j||_2, computed when the key is written (state fp32).
struct KNorm {
  static constexpr std::uint32_t kSignals = kKeys;
  static constexpr Granularity kGranularity = Granularity::kPerKVHead;
  static constexpr StateKind kState = StateKind::kF32;
  static constexpr bool kNeedsDecodeProbs = false;
  static constexpr bool kNeedsWindowQueries = false;
  struct Params {};
};

// ---- allocators ----------------------------------------------------------------------------------

struct Uniform {
  static constexpr Scope kScope = Scope::kPerLayer;
  static constexpr std::uint32_t kSignals = 0;
  struct Params {};
  static std::int64_t budget(const Params&, int /*layer*/, int /*layers*/, std::int64_t /*P*/, std::int64_t C,
                             std::int64_t /*w*/) {
    return C;
  }
};

// PyramidKV (§3.5): per-layer budget C_l = hi - l*step + w, a pure function of (l, P, C, beta, L, w).
// exact_total removes the floored-step surplus one token at a time from the deepest layers
// (sum over layers = L*C exactly, RG-11); exact_total = false reproduces the reference.
struct Pyramid {
  static constexpr Scope kScope = Scope::kPerLayer;
  static constexpr std::uint32_t kSignals = 0;
  struct Params {
    int beta = 20;
    bool exact_total = true;
  };
  static std::int64_t budget(const Params& p, int layer, int layers, std::int64_t P, std::int64_t C, std::int64_t w) {
    const std::int64_t c = C - w;  // top-k count of the average layer
    if (P < C || layers <= 1 || c <= 0) return C;
    if (P < 2 * c) return C;
    std::int64_t lo = c / p.beta;
    std::int64_t hi = 2 * c - lo;
    if (hi >= P - w) {
      hi = P - w;
      lo = 2 * c - hi;
    }
    const std::int64_t step = (hi - lo) / (layers - 1);
    std::int64_t k = hi - layer * step;
    if (p.exact_total) {
      // surplus = sum_l (hi - l*step) - L*c, removed one token each from the deepest layers.
      const std::int64_t L = layers;
      const std::int64_t surplus = L * hi - step * L * (L - 1) / 2 - L * c;
      const std::int64_t per = surplus / L, extra = surplus % L;
      k -= per + (layer >= L - extra ? 1 : 0);
    }
    return k + w;
  }
};

// ---- selectors, mergers, triggers ----------------------------------------------------------------

// Top-k on the 64-bit key (§5.1) among non-protected tokens, kept slots in chronological order.
template <Granularity G = Granularity::kPerKVHead>
struct TopK {
  static constexpr Granularity kGranularity = G;
  static constexpr std::uint32_t kSignals = kPositions;
  struct Params {
    std::int32_t n_sink = 0;
    std::int32_t n_recent = 0;
    TieBreak tie = TieBreak::kPreferEarlier;
  };
};

// Mergers (evict/merge.hpp): NearestCos (D2O), ConsecutiveGaussian (KVMerger).
struct NoMerge {
  static constexpr std::uint32_t kSignals = 0;
  static constexpr bool kGroupsBeforeSelect = false;
  struct Params {};
  struct SegmentState {};
  static Status check(const Params&) { return Status::kSuccess; }
};

// SnapKV's "prefill end": the cache compacts at the end of a chunk that leaves a segment over
// budget (with the prompt as one chunk this is exactly prefill-end selection).
struct AtPrefillEnd {
  static constexpr bool kFiresDuringDecode = false;
  struct Params {};
  static bool should_compact(const Params&, std::int64_t N, std::int64_t C) { return N > C; }
};

// Every chunk end (every decode step with chunk 1) once over budget (H2O, StreamingLLM, KNorm).
struct OnOverflow {
  static constexpr bool kFiresDuringDecode = true;
  struct Params {};
  static bool should_compact(const Params&, std::int64_t N, std::int64_t C) { return N > C; }
};

// Drop in batches: compact when N >= C + m (Scissorhands' m).
struct EveryN {
  static constexpr bool kFiresDuringDecode = true;
  struct Params {
    int m = 64;
  };
  static bool should_compact(const Params& p, std::int64_t N, std::int64_t C) { return N >= C + p.m; }
};

// ---- the composition ---------------------------------------------------------------------------

template <class Scorer, class Allocator, class Selector, class Merger = NoMerge, class Trigger = AtPrefillEnd>
class EvictionPolicy {
 public:
  using scorer_type = Scorer;
  using allocator_type = Allocator;
  using selector_type = Selector;
  using merger_type = Merger;
  using trigger_type = Trigger;

  static constexpr std::uint32_t kSignals =
      Scorer::kSignals | Allocator::kSignals | Selector::kSignals | Merger::kSignals;
  static constexpr StateKind kState = Scorer::kState;
  static constexpr bool kScorerHooks = scorer_has_hooks<Scorer>::value;
  static constexpr bool kOnChunk = scorer_has_on_chunk<Scorer>::value;
  // One keep set per group of layers (all KV heads of all its layers): the allocator defines the
  // groups (group_size), the scorer reduces a group's per-head column sums (unit_scores).
  static constexpr bool kSharedAcrossLayers = Selector::kGranularity == Granularity::kPerLayerGroup;
  template <class S, bool Custom = scorer_has_hooks<S>::value>
  struct state_of {
    using type = std::conditional_t<S::kState == StateKind::kU64, std::uint64_t, float>;
  };
  template <class S>
  struct state_of<S, true> {
    using type = typename S::State;
  };
  using State = typename state_of<Scorer>::type;  // per-token state element (compaction moves it)

  static_assert(static_cast<int>(Selector::kGranularity) >= static_cast<int>(Scorer::kGranularity),
                "selector granularity must be equal to or coarser than the scorer's (§2.2)");
  static_assert(!Trigger::kFiresDuringDecode || Scorer::kState == StateKind::kNone || Scorer::kNeedsDecodeProbs ||
                    (Scorer::kSignals & kKeys) != 0 || scorer_has_on_chunk<Scorer>::value,
                "a decode-time trigger needs a decode update path for every per-token state (§2.2)");
  static constexpr bool kMerges = !std::is_same<Merger, NoMerge>::value;

  struct Params {
    std::int64_t budget = 256;  // C: tokens per segment after compaction, protected included
    typename Scorer::Params scorer;
    typename Allocator::Params allocator;
    typename Selector::Params selector;
    typename Merger::Params merger;
    typename Trigger::Params trigger;
  };

  // Protected ranges; the observation window of window scorers is protected as recent tokens.
  static Protection protection(const Params& p) {
    Protection pr;
    pr.n_sink = p.selector.n_sink;
    pr.n_recent = p.selector.n_recent;
    if constexpr (Scorer::kNeedsWindowQueries) {
      if (p.scorer.window > pr.n_recent) pr.n_recent = p.scorer.window;
    }
    return pr;
  }

  // Bad parameters: budget < 1, budget below the protected ranges, budget over capacity.
  static Status check(const Params& p, std::int64_t capacity) {
    if (p.budget < 1) return Status::kErrorInvalidArgument;
    if (p.budget > capacity) return Status::kErrorCapacityExceeded;
    const Protection pr = protection(p);
    if (pr.n_sink < 0 || pr.n_recent < 0) return Status::kErrorInvalidArgument;
    if (static_cast<std::int64_t>(pr.n_sink) + pr.n_recent > p.budget) return Status::kErrorInvalidArgument;
    if constexpr (std::is_same<Scorer, PersistCount>::value) {
      if (p.scorer.history < 1 || p.scorer.history > 64) return Status::kErrorInvalidArgument;
    }
    if constexpr (std::is_same<Scorer, WindowAttn>::value) {
      if (p.scorer.window < 1 || p.scorer.kernel < 1 || p.scorer.kernel % 2 == 0) return Status::kErrorInvalidArgument;
    }
    if constexpr (std::is_same<Allocator, Pyramid>::value) {
      if (p.allocator.beta < 1) return Status::kErrorInvalidArgument;
    }
    if constexpr (Allocator::kScope == Scope::kAllLayers) MEMATTN_RETURN_IF_ERROR(Allocator::check(p.allocator));
    if constexpr (scorer_has_check<Scorer>::value) MEMATTN_RETURN_IF_ERROR(Scorer::check(p.scorer));
    if constexpr (kSharedAcrossLayers) {
      if (Allocator::group_size(p.allocator, 1) < 1) return Status::kErrorInvalidArgument;
    }
    return Merger::check(p.merger);
  }

  static bool should_compact(const Params& p, std::int64_t N, std::int64_t C) {
    return Trigger::should_compact(p.trigger, N, C);
  }

  static int group_layers(const Params& p, int layers) {
    if constexpr (kSharedAcrossLayers) {
      return Allocator::group_size(p.allocator, layers);
    } else {
      (void)p;
      (void)layers;
      return 1;
    }
  }

  static std::int64_t budget(const Params& p, int layer, int layers, std::int64_t P) {
    std::int64_t w = 0;
    if constexpr (Scorer::kNeedsWindowQueries) w = p.scorer.window;
    return Allocator::budget(p.allocator, layer, layers, P, p.budget, w);
  }

  // State of a freshly written token (key: its D fp32 channels; pos: its position).
  template <class St>
  static void init_token(St* state, std::int64_t slot, const float* key, int D, std::int32_t pos = 0) {
    if constexpr (kScorerHooks) {
      state[slot] = Scorer::init_state(pos);
    } else if constexpr (std::is_same<Scorer, KNorm>::value) {
      double s = 0;
      for (int d = 0; d < D; ++d) s += static_cast<double>(key[d]) * key[d];
      state[slot] = static_cast<St>(std::sqrt(s));
    } else if constexpr (Scorer::kState != StateKind::kNone) {
      state[slot] = St(0);
    }
    (void)pos;
    (void)state;
    (void)slot;
    (void)key;
    (void)D;
  }

  // Decode epilogue: p̄ = GQA-reduced probability of one query on `slot`; n_visible = tokens it saw;
  // t_query = the query's position (the step, for recurrence scorers).
  template <class St>
  static void on_decode_prob(const Params& p, St* state, std::int64_t slot, float pbar, std::int64_t n_visible,
                             std::int32_t t_query = 0) {
    if constexpr (kScorerHooks) {
      Scorer::on_prob(p.scorer, state[slot], pbar, t_query, n_visible);
    } else if constexpr (std::is_same<Scorer, AccumAttn>::value) {
      state[slot] = p.scorer.gamma * state[slot] + pbar;
    } else if constexpr (std::is_same<Scorer, PersistCount>::value) {
      const bool unimportant = pbar < 1.f / static_cast<float>(n_visible);
      state[slot] = (state[slot] << 1) | (unimportant ? 1u : 0u);
    }
    (void)p;
    (void)state;
    (void)slot;
    (void)pbar;
    (void)n_visible;
    (void)t_query;
  }

  // Score of a slot for the state-based and positional scorers (window scorers are computed by
  // the window-score kernel instead).
  template <class St>
  static float score(const Params& p, const St* state, const std::int32_t* pos, std::int64_t slot,
                     std::int32_t t_cur = 0) {
    if constexpr (kScorerHooks) {
      return Scorer::score(p.scorer, state[slot], pos[slot], t_cur);
    } else if constexpr (std::is_same<Scorer, Positional>::value) {
      return static_cast<float>(pos[slot]);
    } else if constexpr (std::is_same<Scorer, AccumAttn>::value) {
      return static_cast<float>(state[slot]);
    } else if constexpr (std::is_same<Scorer, KNorm>::value) {
      return -static_cast<float>(state[slot]);
    } else if constexpr (std::is_same<Scorer, PersistCount>::value) {
      const int h = p.scorer.history;
      const std::uint64_t mask = h >= 64 ? ~0ull : ((1ull << h) - 1ull);
      std::uint64_t x = static_cast<std::uint64_t>(state[slot]) & mask;
      int count = 0;
      for (; x != 0; x &= x - 1) ++count;
      return -static_cast<float>(count);
    } else {
      (void)p;
      (void)state;
      (void)pos;
      (void)slot;
      (void)t_cur;
      return 0.f;
    }
  }
};

// ---- the reference policies --------------------------------------------------------------------

using StreamingLLM = EvictionPolicy<Positional, Uniform, TopK<Granularity::kPerSequence>, NoMerge, OnOverflow>;
using H2O = EvictionPolicy<AccumAttn, Uniform, TopK<>, NoMerge, OnOverflow>;
using Scissorhands = EvictionPolicy<PersistCount, Uniform, TopK<>, NoMerge, EveryN>;
using SnapKV = EvictionPolicy<WindowAttn, Uniform, TopK<>, NoMerge, AtPrefillEnd>;
using PyramidKV = EvictionPolicy<WindowAttn, Pyramid, TopK<>, NoMerge, AtPrefillEnd>;
using KNormPolicy = EvictionPolicy<KNorm, Uniform, TopK<>, NoMerge, OnOverflow>;

// Spec defaults (§3): C = n_sink + n_recent for StreamingLLM (n_sink = 4); H2O heavy:recent 1:1,
// no sinks; Scissorhands w_h = 32, n_recent = 32, m = 64 [lib]; SnapKV w = 32, k = 7, maxpool,
// GQA mean; PyramidKV w = 32, k = 5, avgpool, beta = 20 (KVCache-Factory).
inline StreamingLLM::Params streaming_llm_params(std::int64_t n_sink = 4, std::int64_t n_recent = 252) {
  StreamingLLM::Params p;
  p.budget = n_sink + n_recent;
  p.selector.n_sink = static_cast<std::int32_t>(n_sink);
  p.selector.n_recent = static_cast<std::int32_t>(n_recent);
  return p;
}
inline H2O::Params h2o_params(std::int64_t budget = 256, std::int64_t n_recent = -1) {
  H2O::Params p;
  p.budget = budget;
  p.selector.n_recent = static_cast<std::int32_t>(n_recent < 0 ? budget / 2 : n_recent);
  return p;
}
inline Scissorhands::Params scissorhands_params(std::int64_t budget = 256) {
  Scissorhands::Params p;
  p.budget = budget;
  p.selector.n_recent = 32;
  p.selector.tie = TieBreak::kPreferLater;  // evict the older token on ties [lib]
  return p;
}
inline SnapKV::Params snapkv_params(std::int64_t budget = 2048) {
  SnapKV::Params p;
  p.budget = budget;
  return p;
}
inline PyramidKV::Params pyramidkv_params(std::int64_t budget = 2048) {
  PyramidKV::Params p;
  p.budget = budget;
  p.scorer.kernel = 5;
  p.scorer.pool = PoolKind::kAvg;
  return p;
}
inline KNormPolicy::Params knorm_params(std::int64_t budget = 256) {
  KNormPolicy::Params p;
  p.budget = budget;
  return p;
}

}  // namespace evict
MEMATTN_NAMESPACE_END
