// SentenceKV's per-step sentence scoring on the device (spec eviction.md §3.14): for every KV head
// h and sentence s, score[h][s] = k̄_{h,s} · q̄_h via evict::sentence_score (fp64 fma in d order,
// bit-identical to the CPU). One thread per (head, sentence); the sums stay on the device, only
// the S scores per head go to the selection.
#pragma once

#include <cstdint>

#include "memattn/core/config.hpp"
#include "memattn/evict/sentence.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

constexpr int kSentenceScoreThreads = 128;

struct SentenceScoreParams {
  const float* ksum = nullptr;          // [heads][S][D] key sums of the sentences' host tokens
  const std::int64_t* count = nullptr;  // [S] host tokens per sentence (shared by the heads)
  const float* qbar = nullptr;          // [heads][D] mean query of the partial sentence
  float* score = nullptr;               // [heads][S]
  int heads = 0;
  int sentences = 0;
  int head_dim = 0;
};

template <int Threads>
__global__ void __launch_bounds__(Threads) sentence_score_kernel(const SentenceScoreParams p) {
  const int s = static_cast<int>(blockIdx.x) * Threads + static_cast<int>(threadIdx.x);
  const int h = static_cast<int>(blockIdx.y);
  if (s >= p.sentences) return;
  const std::int64_t D = p.head_dim;
  p.score[static_cast<std::int64_t>(h) * p.sentences + s] = evict::sentence_score(
      p.ksum + (static_cast<std::int64_t>(h) * p.sentences + s) * D, p.count[s], p.qbar + h * D, D);
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
