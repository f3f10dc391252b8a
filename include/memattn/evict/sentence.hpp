// SentenceKV's sentence choice (spec eviction.md §3.14): given per-sentence similarity scores
// sim_s = k̄_s · q̄ and the sentences' token counts, take sentences in descending score order
// while they fit into `room` tokens (a sentence that does not fit is skipped and smaller, lower
// scored ones may still fill the room -- the reference stops at the budget; skipping keeps the
// room used, [lib]). Order is by the 64-bit key of evict/key.hpp (score, sentence index), so ties
// go to the earlier sentence and the CPU and GPU pick the same set. Sentences with count 0 or a
// NaN score are never taken. Output: chosen sentence indices in increasing (chronological) order.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"
#include "memattn/evict/key.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace evict {

// sim_s = k̄_s · q̄ = (Σ_d ksum[d]·qbar[d]) / count in fp64 with explicit fma in d order, so the
// CPU and the CUDA kernel (kernels/sentence_score.cuh) return bit-identical scores; 0 for an empty
// sentence (never chosen).
MEMATTN_HOST_DEVICE float sentence_score(const float* ksum, std::int64_t count, const float* qbar, std::int64_t D) {
  if (count <= 0) return 0.f;
  double acc = 0.0;
  for (std::int64_t d = 0; d < D; ++d) {
#if MEMATTN_DEVICE_COMPILE
    acc = ::fma(static_cast<double>(ksum[d]), static_cast<double>(qbar[d]), acc);
#else
    acc = std::fma(static_cast<double>(ksum[d]), static_cast<double>(qbar[d]), acc);
#endif
  }
  return static_cast<float>(acc / static_cast<double>(count));
}

// Scores of S sentences of one KV head: ksum [S][D], count [S], qbar [D] -> score [S].
inline void sentence_scores(const float* ksum, const std::int64_t* count, std::int64_t S, const float* qbar,
                            std::int64_t D, float* score) {
  for (std::int64_t s = 0; s < S; ++s) score[s] = sentence_score(ksum + s * D, count[s], qbar, D);
}

// keys: scratch of n entries; chosen: room for n entries; *n_chosen / *tokens: how many / their tokens.
inline Status choose_sentences(const float* score, const std::int64_t* count, std::int64_t n, std::int64_t room,
                               std::uint64_t* keys, std::int32_t* chosen, std::int64_t* n_chosen, std::int64_t* tokens) {
  if (n_chosen == nullptr || tokens == nullptr || (n > 0 && (score == nullptr || count == nullptr || keys == nullptr ||
                                                             chosen == nullptr)))
    return Status::kErrorNullPointer;
  if (n < 0 || room < 0) return Status::kErrorInvalidArgument;
  std::int64_t m = 0;
  for (std::int64_t s = 0; s < n; ++s)
    if (count[s] > 0 && score[s] == score[s]) keys[m++] = select_key(score[s], static_cast<std::int32_t>(s), TieBreak::kPreferEarlier);
  std::sort(keys, keys + m, std::greater<std::uint64_t>());
  std::int64_t c = 0, used = 0;
  for (std::int64_t i = 0; i < m && used < room; ++i) {
    const std::int32_t s = static_cast<std::int32_t>(0xFFFFFFFFu - static_cast<std::uint32_t>(keys[i] & 0xFFFFFFFFu));
    if (used + count[s] > room) continue;
    used += count[s];
    chosen[c++] = s;
  }
  std::sort(chosen, chosen + c);
  *n_chosen = c;
  *tokens = used;
  return Status::kSuccess;
}

}  // namespace evict
MEMATTN_NAMESPACE_END
