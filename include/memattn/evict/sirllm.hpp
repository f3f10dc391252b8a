// SirLLM (spec eviction.md §3.9, arXiv 2405.12528, reference Zoeyyao27/SirLLM): token-entropy
// (surprisal) scores from the model's own log-probabilities with per-turn decay; keep sinks +
// top-entropy + recent.
//
// Score e_j = -log p(x_j | x_<j), one scalar per token for every layer and head, written when the
// chunk closes (on_chunk) from the engine's ChunkSignals.token_logprobs (cpu/token_logprobs.hpp
// computes them in fp32 log-space, RG-16). A token without a predictor (the sequence's first
// token: the engine passes NaN) gets the chunk's largest surprisal -- the reference's rule for the
// first token of a scored turn [code]. Decay: each turn multiplies the surviving scores by
// `decay` (e <- e*d, a token k turns old weighs e*d^k) [code]; applied to the older entries before
// the new turn's scores are added and ranked, which ranks exactly as "decay after eviction".
// A turn is one chunk (turn = 0) or every `turn` tokens (so the chunk size does not change the
// dynamics).
// Keep rule: the chunk is appended (and attended) first, then the cache compacts to C = start +
// entropy + recent: sinks and recent protected, the rest by e. The reference instead evicts
// before appending a turn of n_in tokens and keeps the turn whole; with C the same, the kept set
// after the turn differs only in that new tokens here compete on their surprisal.
// The score is per sequence; the CPU cache stores it per segment (4 B per token and KV head) and
// every segment selects the same set (same positions, same scores).
#pragma once

#include <cmath>
#include <cstdint>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"
#include "memattn/evict/policy.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace evict {

struct Surprisal {
  static constexpr std::uint32_t kSignals = kTokenLogProbs | kPositions;
  static constexpr Granularity kGranularity = Granularity::kPerSequence;
  static constexpr StateKind kState = StateKind::kCustom;
  static constexpr bool kNeedsDecodeProbs = false;
  static constexpr bool kNeedsWindowQueries = false;
  using State = float;
  struct Params {
    float decay = 1.f;     // per turn
    std::int64_t turn = 0;  // tokens per turn; 0: every chunk is a turn
  };
  static State init_state(std::int32_t) { return 0.f; }
  static void on_prob(const Params&, State&, float, std::int32_t, std::int64_t) {}
  static float score(const Params&, const State& s, std::int32_t, std::int32_t) { return s; }
  static Status check(const Params& p) {
    return p.decay >= 0.f && p.decay <= 1.f && p.turn >= 0 ? Status::kSuccess : Status::kErrorInvalidArgument;
  }
  // Turns closed by a chunk of `count` tokens starting at first_pos.
  static std::int64_t turns_crossed(const Params& p, std::int64_t first_pos, std::int64_t count) {
    if (p.turn <= 0) return 1;
    return (first_pos + count) / p.turn - first_pos / p.turn;
  }
  // Slots [first_new, size) hold the chunk's tokens (positions first_pos + i); older slots decay.
  static void on_chunk(const Params& p, State* st, const std::int32_t* pos, std::int64_t first_new, std::int64_t size,
                       const TokenSignals& sig) {
    const std::int64_t k = turns_crossed(p, sig.first_pos, sig.count);
    if (k > 0 && p.decay != 1.f) {
      const float f = static_cast<float>(std::pow(static_cast<double>(p.decay), static_cast<double>(k)));
      for (std::int64_t j = 0; j < first_new; ++j) st[j] *= f;
    }
    float mx = -INFINITY;
    for (std::int64_t i = 0; i < sig.count; ++i)
      if (std::isfinite(sig.logprobs[i])) mx = std::fmax(mx, -sig.logprobs[i]);
    if (!std::isfinite(mx)) mx = 0.f;
    for (std::int64_t j = first_new; j < size; ++j) {
      const float lp = sig.logprobs[pos[j] - sig.first_pos];
      st[j] = std::isfinite(lp) ? -lp : mx;
    }
  }
};

using SirLLM = EvictionPolicy<Surprisal, Uniform, TopK<Granularity::kPerSequence>, NoMerge, OnOverflow>;

// Reference defaults: start_size 4, recent_size 0, the rest entropy; decay 1.0 (grocery).
inline SirLLM::Params sirllm_params(std::int64_t budget = 1024, std::int64_t start = 4, std::int64_t recent = 0,
                                    float decay = 1.f) {
  SirLLM::Params p;
  p.budget = budget;
  p.selector.n_sink = static_cast<std::int32_t>(start);
  p.selector.n_recent = static_cast<std::int32_t>(recent);
  p.scorer.decay = decay;
  return p;
}

}  // namespace evict
MEMATTN_NAMESPACE_END
