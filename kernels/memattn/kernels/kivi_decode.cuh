// KIVI fused decode attention on the GPU (specs/quantization.md §6.1): one query token per
// sequence over [quantised blocks | exact fp16 ring], one online softmax, fp32 accumulation, the
// same token order as the CPU cache. Scales and zeros are folded into the float operand:
//   λ_t = Σ_c (τ q_c s_c) k_{t,c} + τ Σ_c q_c z_c,   o_c += Σ_t (p_t s_{t,j}) v_{t,c} + Σ_t p_t z_{t,j},
// so codes enter the products as exact small integers. All g query heads of a KV head share one
// CTA and one read of each block (GQA read-once).
//
// This is the straightforward CUDA-core version: one CTA (128 threads) per (sequence, KV head),
// no split-KV, no tensor cores (the §6.2-§6.5 design is not implemented yet). NaN is never
// laundered: the running max propagates NaN.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/kernels/kivi_append.cuh"
#include "memattn/kernels/quant_codes.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

struct KiviDecodeParams {
  KiviCacheView cache;
  const float* q;        // [B][Hq][D]
  float* o;              // [B][Hq][D]
  const int* n_tokens;   // [B] tokens held (after the append of this step)
  int batch;
  int q_heads;
  float scale;           // softmax scale τ
};

constexpr int kKiviMaxGroup = 8;    // query heads per KV head
constexpr int kKiviMaxDim = 256;
constexpr int kKiviMaxTile = 128;   // tokens per tile (G <= 128)

// max that keeps NaN (fmaxf would drop it).
MEMATTN_DEVICE float kivi_nan_max(float a, float b) { return (a != a) ? a : ((b != b) ? b : (b > a ? b : a)); }

template <int kThreads = 128>
MEMATTN_KERNEL void __launch_bounds__(kThreads) kivi_decode_kernel(const KiviDecodeParams p) {
  const int b = blockIdx.x, h = blockIdx.y;
  const KiviCacheView& c = p.cache;
  const int D = c.cfg.head_dim, G = c.cfg.group, R = c.cfg.residual, GV = c.cfg.vg();
  const int g = p.q_heads / c.num_kv_heads;
  const long long N = p.n_tokens[b];
  const long long nq = N - R > 0 ? (N - R) / G * G : 0;
  MEMATTN_SHARED(float, q_s, [kKiviMaxGroup][kKiviMaxDim]);
  MEMATTN_SHARED(float, qs_s, [kKiviMaxGroup][kKiviMaxDim]);
  MEMATTN_SHARED(float, acc, [kKiviMaxGroup][kKiviMaxDim]);
  MEMATTN_SHARED(float, pr, [kKiviMaxGroup][kKiviMaxTile]);
  MEMATTN_SHARED(float, beta, [kKiviMaxGroup]);
  MEMATTN_SHARED(float, m_s, [kKiviMaxGroup]);
  MEMATTN_SHARED(float, l_s, [kKiviMaxGroup]);
  MEMATTN_SHARED(float, alpha, [kKiviMaxGroup]);
  for (int i = threadIdx.x; i < g * D; i += kThreads) {
    const int gi = i / D, ch = i % D;
    q_s[gi][ch] = p.q[(static_cast<std::size_t>(b) * p.q_heads + h * g + gi) * D + ch] * p.scale;
    acc[gi][ch] = 0.f;
  }
  if (static_cast<int>(threadIdx.x) < g) {
    m_s[threadIdx.x] = -INFINITY;
    l_s[threadIdx.x] = 0.f;
  }
  __syncthreads();
  // Tiles: quantised blocks, then the ring in chunks of up to G tokens.
  const long long ring_tokens = N - nq;
  const long long tiles = nq / G + (ring_tokens + G - 1) / G;
  for (long long tile = 0; tile < tiles; ++tile) {
    const bool quantised = tile < nq / G;
    const long long t0 = quantised ? tile * G : nq + (tile - nq / G) * G;
    const int T = quantised ? G : static_cast<int>(ring_tokens - (t0 - nq) < G ? ring_tokens - (t0 - nq) : G);
    const quant::BlockView bv{quantised ? c.record(b, static_cast<int>(tile), h) : nullptr, c.cfg, c.layout};
    // 1. Folded query and bias (quantised) or the plain query (ring).
    if (quantised) {
      for (int i = threadIdx.x; i < g * D; i += kThreads) {
        const int gi = i / D, ch = i % D;
        qs_s[gi][ch] = q_s[gi][ch] * half_to_float(bv.k_meta(ch).scale);
      }
      if (static_cast<int>(threadIdx.x) < g) {
        float s = 0.f;
        for (int ch = 0; ch < D; ++ch) s += q_s[threadIdx.x][ch] * half_to_float(bv.k_meta(ch).zero);
        beta[threadIdx.x] = s;
      }
      __syncthreads();
    }
    // 2. Logits.
    for (int i = threadIdx.x; i < g * T; i += kThreads) {
      const int gi = i / T, t = i % T;
      float s = 0.f;
      if (quantised) {
        for (int ch = 0; ch < D; ++ch) s += qs_s[gi][ch] * code_to_float(bv.k_code(t, ch));
        s += beta[gi];
      } else {
        const Half* kr = c.ring_k + c.ring_offset(b, t0 + t, h);
        for (int ch = 0; ch < D; ++ch) s += q_s[gi][ch] * half_to_float(kr[ch]);
      }
      pr[gi][t] = s;
    }
    __syncthreads();
    // 3. Online softmax update, one thread per query head.
    if (static_cast<int>(threadIdx.x) < g) {
      const int gi = threadIdx.x;
      float mx = m_s[gi];
      for (int t = 0; t < T; ++t) mx = kivi_nan_max(mx, pr[gi][t]);
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
    // 4. Values.
    for (int i = threadIdx.x; i < g * D; i += kThreads) {
      const int gi = i / D, ch = i % D;
      float s = 0.f;
      if (quantised) {
        float z = 0.f;
        for (int t = 0; t < T; ++t) {
          const quant::GroupMeta m = bv.v_meta(t, ch / GV);
          s += pr[gi][t] * half_to_float(m.scale) * code_to_float(bv.v_code(t, ch));
          z += pr[gi][t] * half_to_float(m.zero);
        }
        s += z;
      } else {
        for (int t = 0; t < T; ++t) s += pr[gi][t] * half_to_float(c.ring_v[c.ring_offset(b, t0 + t, h) + ch]);
      }
      acc[gi][ch] = acc[gi][ch] * alpha[gi] + s;
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < g * D; i += kThreads) {
    const int gi = i / D, ch = i % D;
    p.o[(static_cast<std::size_t>(b) * p.q_heads + h * g + gi) * D + ch] = acc[gi][ch] / l_s[gi];
  }
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
