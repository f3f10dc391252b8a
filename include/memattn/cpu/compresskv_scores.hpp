// CompressKV's layer score on the CPU (spec eviction.md §3.11 with the §4.1 window column sums):
// for each selected query head s (KV head s / G), col_s[j] = sum_i p_{s,i,j} over the observation
// window (two passes, cpu/evict_scores.hpp window_colsum with one head), pooled over the candidate
// region [0, n_cand) (the slots before the protected window), then averaged over the selected heads:
//   score[j] = (1/|S|) sum_{s in S} Pool_k(col_s)[j],  j < n_cand;  score[j] = 0 beyond.
// One score per token of the layer: the caller selects once and compacts every KV head with it.
// Requires that all KV heads of the layer hold the same positions (true for a layer-shared selector).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "memattn/core/status.hpp"
#include "memattn/cpu/convert.hpp"
#include "memattn/cpu/evict_scores.hpp"
#include "memattn/evict/policy.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cpu {

// Scratch floats / int64 head_subset_window_scores needs.
inline std::size_t head_subset_scratch_elems(std::int64_t w, std::int64_t D, std::int64_t N) {
  return static_cast<std::size_t>(w * D + 2 * N) + window_colsum_scratch_elems(1, w, D, N);
}
inline std::size_t head_subset_visible_elems(std::int64_t w) { return static_cast<std::size_t>(w); }

// wq: window queries [w][Hq][D] (post-RoPE, unscaled, TQ = float or Half), wpos[w] their positions;
// keys[h]: the N key rows of KV head h (row stride D), kpos[N] their (shared, ascending) positions;
// heads[n_heads]: selected query heads; pooling (odd kernel, avg|max, count_include_pad).
template <class TQ, class T>
Status head_subset_window_scores(const TQ* wq, const std::int32_t* wpos, std::int64_t w, std::int64_t Hq,
                                 std::int64_t Hkv, std::int64_t D, const T* const* keys, const std::int32_t* kpos,
                                 std::int64_t N, std::int64_t n_cand, const std::int32_t* heads, int n_heads,
                                 int kernel, evict::PoolKind pool, bool count_include_pad, float* out,
                                 float* scratch, std::int64_t* visible_scratch) {
  if (wq == nullptr || wpos == nullptr || keys == nullptr || kpos == nullptr || heads == nullptr || out == nullptr ||
      scratch == nullptr || visible_scratch == nullptr)
    return Status::kErrorNullPointer;
  if (w <= 0 || Hq <= 0 || Hkv <= 0 || Hq % Hkv != 0 || D <= 0 || N <= 0 || n_cand < 0 || n_cand > N || n_heads <= 0)
    return Status::kErrorInvalidShape;
  if (kernel < 1 || kernel % 2 == 0) return Status::kErrorInvalidArgument;
  const std::int64_t G = Hq / Hkv;
  float* q = scratch;            // [w][D] of one head
  float* col = q + w * D;        // [N]
  float* pooled = col + N;       // [N]
  float* cs = pooled + N;        // window_colsum scratch
  const float scale = 1.f / std::sqrt(static_cast<float>(D));
  std::fill(out, out + N, 0.f);
  for (int s = 0; s < n_heads; ++s) {
    const std::int64_t hq = heads[s];
    if (hq < 0 || hq >= Hq || keys[hq / G] == nullptr) return Status::kErrorInvalidArgument;
    for (std::int64_t i = 0; i < w; ++i) to_float_n(wq + (i * Hq + hq) * D, D, q + i * D);
    MEMATTN_RETURN_IF_ERROR(window_colsum(q, D, D, wpos, w, 1, D, scale, keys[hq / G], D, kpos, N,
                                          evict::GroupReduce::kSum, col, cs, visible_scratch));
    MEMATTN_RETURN_IF_ERROR(pool_scores(col, n_cand, kernel, pool, count_include_pad, pooled));
    for (std::int64_t j = 0; j < n_cand; ++j) out[j] += pooled[j];
  }
  const float inv = 1.f / static_cast<float>(n_heads);
  for (std::int64_t j = 0; j < n_cand; ++j) out[j] *= inv;
  return Status::kSuccess;
}

}  // namespace cpu
MEMATTN_NAMESPACE_END
