// Token-eviction score epilogue of the GPU decode attention (spec eviction.md §4.3): the decode
// kernel wrote the raw logits s = scale * q.k of every (row f = t * G + g of a KV head, key j)
// next to its LSE (DecodeArgs::scores, memattn/kernels/dense_decode.cuh), so the probabilities
// p = exp(s - lse) cost one read of 4 * Tq * G bytes per key (2 * Tq * G with fp16 logits,
// DecodeArgs::scores_half), not a second pass over K.
// One thread per (sequence b, KV head h, key j): for each query token t that sees j (causal,
// sliding window), p̄ = R_g exp(s_{f,j} - lse_{t, h*G+g}) (R = mean | max | sum over the G query
// heads), then the policy's state update, in token order:
//   kAccumulate (H2O, A2SF):   acc_j <- gamma * acc_j + p̄
//   kHistory (Scissorhands):  hist_j <- hist_j << 1 | [p̄ < 1 / n_visible]
// the same updates as evict::EvictionPolicy::on_decode_prob on the CPU. Keys a token does not
// see get no update for that token. Deterministic (no atomics: one thread owns a key).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/core/config.hpp"
#include "memattn/core/dtype.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

constexpr int kEvictScoreThreads = 256;

enum class EvictScoreMode : int { kAccumulate = 0, kHistory = 1 };

struct EvictScoreParams {
  const float* scores = nullptr;  // [B, Hkv, Tq * G, Lcap] raw logits (dense_decode's output)
  const Half* scores_half = nullptr;   // or the same rounded to fp16 (DecodeArgs::scores_half)
  std::int64_t scores_stride[3] = {};  // b, h, f (elements)
  const float* lse = nullptr;     // [B, Tq, Hq] natural log (dense_decode's output)
  std::int64_t lse_stride[3] = {};     // b, t, hq
  const std::int32_t* seq_lens = nullptr;  // device [B], optional (nullptr: Lcap)
  const std::int32_t* seg_lens = nullptr;  // device [B * Hkv], optional: per-(sequence, KV head) lengths
                                           // (caches with per-head budgets); overrides seq_lens
  float* acc = nullptr;           // kAccumulate: [B, Hkv, Lcap]
  std::uint64_t* hist = nullptr;  // kHistory: [B, Hkv, Lcap]
  std::int64_t state_stride[2] = {};   // b, h (keys contiguous)
  int batch = 0, kv_heads = 0, group = 0, q_tokens = 0, kv_capacity = 0, window = 0;
  float gamma = 1.f;
  int reduce = 0;  // evict::GroupReduce: 0 mean, 1 max, 2 sum
};

// grid = (ceil(Lcap / kEvictScoreThreads), B * Hkv), block = kEvictScoreThreads.
// The kernel streams 4 * Tq * G bytes of logits per key (2 * Tq * G in fp16) and does little
// arithmetic on them, so it is bound by the loads each thread keeps in flight: the logits and
// LSEs of up to kEvictScorePrefetch query heads are loaded before the first exp (one load per
// thread at a time held the first version to 192 MiB in 93 us, 2.2 TB/s, on an H100). The
// reduction order over g is unchanged, so the result is bit for bit that of a sequential loop.
constexpr int kEvictScorePrefetch = 4;

template <EvictScoreMode kMode>
MEMATTN_KERNEL void __launch_bounds__(kEvictScoreThreads) evict_score_epilogue_kernel(const EvictScoreParams p) {
  const int bh = static_cast<int>(blockIdx.y);
  const int b = bh / p.kv_heads, h = bh % p.kv_heads;
  const int j = static_cast<int>(blockIdx.x) * kEvictScoreThreads + static_cast<int>(threadIdx.x);
  const int len = p.seg_lens ? p.seg_lens[bh] : (p.seq_lens ? p.seq_lens[b] : p.kv_capacity);
  if (len <= 0 || len < p.q_tokens || len > p.kv_capacity || j >= len) return;
  const std::int64_t state_at = b * p.state_stride[0] + h * p.state_stride[1] + j;
  float acc = 0.f;
  std::uint64_t hist = 0;
  if (kMode == EvictScoreMode::kAccumulate) acc = p.acc[state_at];
  else hist = p.hist[state_at];
  const std::int64_t srow = b * p.scores_stride[0] + h * p.scores_stride[1] + j;
  const bool half = p.scores_half != nullptr;
  const float* lrow = p.lse + b * p.lse_stride[0] + h * p.group * p.lse_stride[2];
#pragma unroll 1
  for (int t = 0; t < p.q_tokens; ++t) {
    const int pos = len - p.q_tokens + t;  // position of query token t
    const int lo = p.window > 0 ? pos - p.window + 1 : 0;
    if (j > pos || j < lo) continue;
    float pbar = 0.f;
#pragma unroll 1
    for (int g0 = 0; g0 < p.group; g0 += kEvictScorePrefetch) {
      float s[kEvictScorePrefetch], l[kEvictScorePrefetch];
#pragma unroll
      for (int k = 0; k < kEvictScorePrefetch; ++k) {
        const int g = g0 + k;
        if (g < p.group) {
          const std::int64_t at = srow + (t * p.group + g) * p.scores_stride[2];
          s[k] = half ? __half2float(reinterpret_cast<const __half*>(p.scores_half)[at]) : p.scores[at];
          l[k] = lrow[t * p.lse_stride[1] + g * p.lse_stride[2]];
        }
      }
#pragma unroll
      for (int k = 0; k < kEvictScorePrefetch; ++k) {
        const int g = g0 + k;
        if (g < p.group) {
          const float pr = expf(s[k] - l[k]);  // s = -inf: 0
          pbar = g == 0 ? pr : (p.reduce == 1 ? fmaxf(pbar, pr) : pbar + pr);
        }
      }
    }
    if (p.reduce == 0) pbar /= static_cast<float>(p.group);
    if (kMode == EvictScoreMode::kAccumulate) {
      acc = p.gamma * acc + pbar;
    } else {
      const int visible = pos - (lo > 0 ? lo : 0) + 1;
      const std::uint64_t unimportant = pbar * static_cast<float>(visible) < 1.f ? 1u : 0u;
      hist = (hist << 1) | unimportant;
    }
  }
  if (kMode == EvictScoreMode::kAccumulate) p.acc[state_at] = acc;
  else p.hist[state_at] = hist;
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
