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

// grid = (ceil(Lcap / (kEvictScoreThreads * V)), B * Hkv), block = kEvictScoreThreads; V
// consecutive keys per thread.
// The kernel streams 4 * Tq * G bytes of logits per key (2 * Tq * G in fp16) and does little
// arithmetic on them, so it is bound by the loads each thread keeps in flight: the logits and
// LSEs of up to kEvictScorePrefetch query heads are loaded before the first exp (one load per
// thread at a time held the first version to 192 MiB in 93 us, 2.2 TB/s, on an H100). The
// reduction order over g is unchanged, so the result is bit for bit that of a sequential loop.
// V = 4 (kAccumulate on aligned rows; the wrapper checks kv_capacity and every stride a multiple of
// 4, 16-byte fp32 / 8-byte fp16 logit and 16-byte accumulator bases): 16-byte logit loads (8 in
// fp16) and one 16-byte accumulator load and store per thread, the index set-up paid once per four
// keys. With one key per thread the kernel spent ~390 instructions per key and ran compute-bound at
// 1.25 TB/s (H200, B 16, L 64K, G 4): 121 us, 56 us with V = 4. Logits of keys a query token does
// not see (or past len, inside the row) are loaded and dropped.
constexpr int kEvictScorePrefetch = 4;
constexpr int kEvictScoreVec = 4;

template <int V>
MEMATTN_DEVICE void evict_load_logits(const EvictScoreParams& p, std::int64_t at, float (&s)[V]) {
  if constexpr (V == 1) {
    s[0] = p.scores_half != nullptr ? __half2float(reinterpret_cast<const __half*>(p.scores_half)[at]) : p.scores[at];
  } else if (p.scores_half != nullptr) {
    const uint2 u = *reinterpret_cast<const uint2*>(reinterpret_cast<const __half*>(p.scores_half) + at);
    const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&u.x));
    const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&u.y));
    s[0] = a.x, s[1] = a.y, s[2] = b.x, s[3] = b.y;
  } else {
    const float4 v = *reinterpret_cast<const float4*>(p.scores + at);
    s[0] = v.x, s[1] = v.y, s[2] = v.z, s[3] = v.w;
  }
}

template <EvictScoreMode kMode, int V = 1>
MEMATTN_KERNEL void __launch_bounds__(kEvictScoreThreads) evict_score_epilogue_kernel(const EvictScoreParams p) {
  static_assert(V == 1 || (V == kEvictScoreVec && kMode == EvictScoreMode::kAccumulate), "4 keys: accumulate only");
  const int bh = static_cast<int>(blockIdx.y);
  const int b = bh / p.kv_heads, h = bh % p.kv_heads;
  const int j0 = (static_cast<int>(blockIdx.x) * kEvictScoreThreads + static_cast<int>(threadIdx.x)) * V;
  const int len = p.seg_lens ? p.seg_lens[bh] : (p.seq_lens ? p.seq_lens[b] : p.kv_capacity);
  if (len <= 0 || len < p.q_tokens || len > p.kv_capacity || j0 >= len) return;
  const int nk = len - j0 < V ? len - j0 : V;  // keys of this thread inside the sequence
  const std::int64_t state_at = b * p.state_stride[0] + h * p.state_stride[1] + j0;
  float acc[V] = {};
  std::uint64_t hist = 0;
  if constexpr (kMode == EvictScoreMode::kHistory) {
    hist = p.hist[state_at];
  } else if constexpr (V == 1) {
    acc[0] = p.acc[state_at];
  } else {
    const float4 a4 = *reinterpret_cast<const float4*>(p.acc + state_at);
    acc[0] = a4.x, acc[1] = a4.y, acc[2] = a4.z, acc[3] = a4.w;
  }
  const std::int64_t srow = b * p.scores_stride[0] + h * p.scores_stride[1] + j0;
  const float* lrow = p.lse + b * p.lse_stride[0] + h * p.group * p.lse_stride[2];
#pragma unroll 1
  for (int t = 0; t < p.q_tokens; ++t) {
    const int pos = len - p.q_tokens + t;  // position of query token t
    const int lo = p.window > 0 ? pos - p.window + 1 : 0;
    if (j0 > pos || j0 + nk - 1 < lo) continue;  // no key of this thread is visible to t
    float pbar[V] = {};
#pragma unroll 1
    for (int g0 = 0; g0 < p.group; g0 += kEvictScorePrefetch) {
      float s[kEvictScorePrefetch][V], l[kEvictScorePrefetch];
#pragma unroll
      for (int k = 0; k < kEvictScorePrefetch; ++k) {
        const int g = g0 + k;
        if (g < p.group) {
          evict_load_logits<V>(p, srow + (t * p.group + g) * p.scores_stride[2], s[k]);
          l[k] = lrow[t * p.lse_stride[1] + g * p.lse_stride[2]];
        }
      }
#pragma unroll
      for (int k = 0; k < kEvictScorePrefetch; ++k) {
        const int g = g0 + k;
        if (g < p.group) {
#pragma unroll
          for (int i = 0; i < V; ++i) {
            const float pr = expf(s[k][i] - l[k]);  // s = -inf: 0
            pbar[i] = g == 0 ? pr : (p.reduce == 1 ? fmaxf(pbar[i], pr) : pbar[i] + pr);
          }
        }
      }
    }
#pragma unroll
    for (int i = 0; i < V; ++i) {
      const int j = j0 + i;
      if (i >= nk || j > pos || j < lo) continue;
      const float pb = p.reduce == 0 ? pbar[i] / static_cast<float>(p.group) : pbar[i];
      if (kMode == EvictScoreMode::kAccumulate) {
        acc[i] = p.gamma * acc[i] + pb;
      } else {
        const int visible = pos - (lo > 0 ? lo : 0) + 1;
        const std::uint64_t unimportant = pb * static_cast<float>(visible) < 1.f ? 1u : 0u;
        hist = (hist << 1) | unimportant;
      }
    }
  }
  if constexpr (kMode == EvictScoreMode::kHistory) {
    p.hist[state_at] = hist;
  } else if constexpr (V == 1) {
    p.acc[state_at] = acc[0];
  } else if (nk == V) {
    *reinterpret_cast<float4*>(p.acc + state_at) = make_float4(acc[0], acc[1], acc[2], acc[3]);
  } else {
#pragma unroll
    for (int i = 0; i < V; ++i)
      if (i < nk) p.acc[state_at + i] = acc[i];
  }
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
