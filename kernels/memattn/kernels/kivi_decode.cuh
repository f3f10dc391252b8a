// KIVI fused decode attention on the GPU (specs/quantization.md §6.1): one query token per
// sequence over [quantised blocks | exact fp16 ring], one online softmax, fp32 accumulation, the
// same token order as the CPU cache. Scales and zeros are folded into the float operand:
//   λ_t = Σ_c (τ q_c s_c) k_{t,c} + τ Σ_c q_c z_c,   o_c += Σ_t (p_t s_{t,j}) v_{t,c} + Σ_t p_t z_{t,j},
// so codes enter the products as exact small integers. All g query heads of a KV head share one
// CTA and one read of each block (GQA read-once).
//
// This is the straightforward CUDA-core version: one CTA (128 threads) per (sequence, KV head)
// and split, no tensor cores. Split-KV (cuda::kivi_decode's workspace call): split z of grid.z
// takes tiles [z split_tiles, (z + 1) split_tiles) of the (sequence, KV head)'s tiles (its blocks,
// then the ring in chunks of up to G tokens) and writes a partial (unnormalised acc, m in natural
// log, l; an empty split m = -inf) for think_combine_kernel. Ring mode (ring_slot >= 0): only the
// ring's tiles, into partial slot ring_slot, beside the tensor-core kernel's splits over the
// blocks (think_decode_mma.cuh over KIVI records); it also writes the segment's quantised token
// count to n_q_out, that kernel's n_q. NaN is never laundered: the running max propagates NaN.
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
  // split-KV (optional): partials at slot k of [slots][B * Hkv][g][D] (acc) and [..][g][2] (m, l)
  // instead of o
  float* part_acc = nullptr;
  float* part_ml = nullptr;
  int split_tiles = 0;   // tiles per split (blockIdx.z); 0: all
  int ring_slot = -1;    // >= 0: ring mode, see above
  int* n_q_out = nullptr;
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
  long long tile_lo = 0, tile_hi = tiles;
  if (p.ring_slot >= 0) {
    tile_lo = nq / G;
    if (threadIdx.x == 0) p.n_q_out[static_cast<long long>(b) * c.num_kv_heads + h] = static_cast<int>(nq);
  } else if (p.split_tiles > 0) {
    tile_lo = static_cast<long long>(blockIdx.z) * p.split_tiles;
    tile_lo = tile_lo < tiles ? tile_lo : tiles;
    tile_hi = tile_lo + p.split_tiles < tiles ? tile_lo + p.split_tiles : tiles;
  }
  for (long long tile = tile_lo; tile < tile_hi; ++tile) {
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
  if (p.part_acc != nullptr) {
    const long long slot = p.ring_slot >= 0 ? p.ring_slot : blockIdx.z;
    const long long row0 = ((slot * gridDim.x + b) * c.num_kv_heads + h) * g;  // [slot][b][h] row of head 0
    for (int i = threadIdx.x; i < g * D; i += kThreads) {
      const int gi = i / D, ch = i % D;
      p.part_acc[(row0 + gi) * D + ch] = acc[gi][ch];
      if (ch == 0) {
        p.part_ml[(row0 + gi) * 2] = m_s[gi];
        p.part_ml[(row0 + gi) * 2 + 1] = l_s[gi];
      }
    }
    return;
  }
  for (int i = threadIdx.x; i < g * D; i += kThreads) {
    const int gi = i / D, ch = i % D;
    p.o[(static_cast<std::size_t>(b) * p.q_heads + h * g + gi) * D + ch] = acc[gi][ch] / l_s[gi];
  }
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
