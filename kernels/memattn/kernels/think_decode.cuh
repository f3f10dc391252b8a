// ThinK two-segment decode attention on the GPU (spec eviction.md §3.6, §5.7): one query token per
// sequence over [old segment: d_keep kept key channels | new segment: full-width keys], one online
// softmax, values full width, tau = 1/sqrt(d) of the full d. The CTA gathers q[ch] of its group
// into shared memory once; old-segment logits use d_keep channels, new-segment logits all d.
// Same token order and math as the CPU composed cache (cpu/composed_kv_cache.hpp).
//
// Straightforward CUDA-core version: one CTA (128 threads) per (sequence, KV head), GQA read-once
// (all g query heads of the KV head share each key row), tiles of 64 tokens, no split-KV.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/core/config.hpp"
#include "memattn/core/dtype.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

struct ThinKDecodeParams {
  // per segment s = b * kv_heads + h:
  const Half* k_old;              // rows of old_row_stride (>= d_keep) halves, at k_old + s * old_seg_stride
  long long old_seg_stride;
  int old_row_stride;
  const std::uint8_t* channels;   // [segments][d_keep] kept channels
  int d_keep;
  const Half* k_new;              // rows of head_dim halves, at k_new + s * new_seg_stride
  long long new_seg_stride;
  const Half* v;                  // rows of head_dim halves (old tokens, then new), at v + s * v_seg_stride
  long long v_seg_stride;
  const int* n_old;               // [segments]
  const int* n_new;               // [segments]
  const float* q;                 // [B][Hq][D]
  float* o;                       // [B][Hq][D]
  int batch, q_heads, kv_heads, head_dim;
  float scale;                    // tau (of the full head_dim)
};

constexpr int kThinKMaxGroup = 8;
constexpr int kThinKMaxDim = 256;
constexpr int kThinKTile = 64;

MEMATTN_DEVICE float think_nan_max(float a, float b) { return (a != a) ? a : ((b != b) ? b : (b > a ? b : a)); }

template <int kThreads = 128>
MEMATTN_KERNEL void __launch_bounds__(kThreads) think_decode_kernel(const ThinKDecodeParams p) {
  const int b = blockIdx.x, h = blockIdx.y;
  const long long s = static_cast<long long>(b) * p.kv_heads + h;
  const int D = p.head_dim, dk = p.d_keep, g = p.q_heads / p.kv_heads;
  const int n_old = p.n_old[s], n_new = p.n_new[s];
  __shared__ float q_s[kThinKMaxGroup][kThinKMaxDim];
  __shared__ float qc_s[kThinKMaxGroup][kThinKMaxDim];
  __shared__ float acc[kThinKMaxGroup][kThinKMaxDim];
  __shared__ float pr[kThinKMaxGroup][kThinKTile];
  __shared__ float m_s[kThinKMaxGroup], l_s[kThinKMaxGroup], alpha[kThinKMaxGroup];
  const std::uint8_t* ch = p.channels + s * dk;
  for (int i = threadIdx.x; i < g * D; i += kThreads) {
    const int gi = i / D, c = i % D;
    q_s[gi][c] = p.q[(static_cast<long long>(b) * p.q_heads + h * g + gi) * D + c] * p.scale;
    acc[gi][c] = 0.f;
  }
  if (threadIdx.x < g) {
    m_s[threadIdx.x] = -INFINITY;
    l_s[threadIdx.x] = 0.f;
  }
  __syncthreads();
  for (int i = threadIdx.x; i < g * dk; i += kThreads) qc_s[i / dk][i % dk] = q_s[i / dk][ch[i % dk]];
  __syncthreads();
  const Half* k_old = p.k_old + s * p.old_seg_stride;
  const Half* k_new = p.k_new + s * p.new_seg_stride;
  const Half* v = p.v + s * p.v_seg_stride;
  const int total = n_old + n_new;
  for (int t0 = 0; t0 < total; t0 += kThinKTile) {
    const int T = total - t0 < kThinKTile ? total - t0 : kThinKTile;
    for (int i = threadIdx.x; i < g * T; i += kThreads) {
      const int gi = i / T, t = t0 + i % T;
      float acc_s = 0.f;
      if (t < n_old) {
        const Half* kr = k_old + static_cast<long long>(t) * p.old_row_stride;
        for (int c = 0; c < dk; ++c) acc_s += qc_s[gi][c] * half_to_float(kr[c]);
      } else {
        const Half* kr = k_new + static_cast<long long>(t - n_old) * D;
        for (int c = 0; c < D; ++c) acc_s += q_s[gi][c] * half_to_float(kr[c]);
      }
      pr[gi][i % T] = acc_s;
    }
    __syncthreads();
    if (threadIdx.x < g) {
      const int gi = threadIdx.x;
      float mx = m_s[gi];
      for (int t = 0; t < T; ++t) mx = think_nan_max(mx, pr[gi][t]);
      const float a = mx == -INFINITY ? 1.f : expf(m_s[gi] - mx);
      float sum = 0.f;
      for (int t = 0; t < T; ++t) {
        const float e = expf(pr[gi][t] - mx);
        pr[gi][t] = e;
        sum += e;
      }
      l_s[gi] = l_s[gi] * a + sum;
      m_s[gi] = mx;
      alpha[gi] = a;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < g * D; i += kThreads) {
      const int gi = i / D, c = i % D;
      float sv = 0.f;
      for (int t = 0; t < T; ++t) sv += pr[gi][t] * half_to_float(v[static_cast<long long>(t0 + t) * D + c]);
      acc[gi][c] = acc[gi][c] * alpha[gi] + sv;
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < g * D; i += kThreads) {
    const int gi = i / D, c = i % D;
    p.o[(static_cast<long long>(b) * p.q_heads + h * g + gi) * D + c] = acc[gi][c] / l_s[gi];
  }
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
