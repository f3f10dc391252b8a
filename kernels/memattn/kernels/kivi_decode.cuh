// KIVI fused decode attention on the GPU (specs/quantization.md §6.1): one query token per
// sequence over [quantised blocks | exact fp16 ring], one online softmax, fp32 accumulation, the
// same token order as the CPU cache. Key scales and zeros are folded into the query:
//   λ_t = Σ_c (τ q_c s_c) k_{t,c} + τ Σ_c q_c z_c,
// so key codes enter the products as exact small integers; a value is dequantised once per
// (token, channel), s_{t,j} v_{t,c} + z_{t,j} (one FMA, exact up to one rounding), for all g query
// heads of the KV head: they share one CTA and one read of each block (GQA read-once).
//
// The CUDA-core version: one CTA (128 threads) per (sequence, KV head) and split, no tensor cores,
// over tiles of up to G <= 128 tokens. Every phase is spread over the threads: a thread that walks
// a whole key row, a tile's softmax or a value column per query head alone (the first version) made
// a tile cost ~64 us of serial loads and expf.
//   1. (quantised) thread per channel: folded query τ q s and zeros z for the tile;
//   2. logits: thread per (token, channel slice): lanes over tokens, so a dot product needs no
//      shuffles, and warps over slices when the tile has fewer tokens than threads; 8 codes (or 8
//      ring halves, one 16-byte load) per step, each FMA'd into g per-head partials;
//   3. softmax: warp per query head, lanes over tokens (and over channels for the bias), the
//      slices summed in a fixed order, max and sum by butterfly shuffles;
//   4. values: thread per channel, its g accumulators in registers, the tile's tokens streamed
//      (each code word, value meta and probability row read once for all g heads).
// No atomics; every sum has a fixed order, so the result is deterministic.
//
// Split-KV (cuda::kivi_decode's workspace call): split z of grid.z takes tiles
// [z split_tiles, (z + 1) split_tiles) of the (sequence, KV head)'s tiles (its blocks, then the
// ring in chunks of up to G tokens) and writes a partial (unnormalised acc, m in natural log, l;
// an empty split m = -inf) for think_combine_kernel. Ring mode (ring_slot >= 0): only the ring's
// tiles, into partial slot ring_slot, beside the tensor-core kernel's splits over the blocks
// (think_decode_mma.cuh over KIVI records); it also writes the segment's quantised token count to
// n_q_out, that kernel's n_q. NaN is never laundered: the running max propagates NaN.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/kernels/kivi_append.cuh"
#include "memattn/kernels/quant_codes.cuh"
#include "memattn/kernels/warp_reduce.cuh"

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

namespace kivi_detail {

MEMATTN_DEVICE float half_value(Half x) { return __half2float(*reinterpret_cast<const __half*>(&x)); }
MEMATTN_DEVICE float2 half2_bits(std::uint32_t w) { return __half22float2(*reinterpret_cast<const __half2*>(&w)); }

// s[i] += x a[i] for the g (<= 8) query heads, a as two float4 (heads 0-3, 4-7)
MEMATTN_DEVICE void fma_heads(float (&s)[kKiviMaxGroup], const float4 (&a)[2], float x, int g) {
  s[0] = fmaf(a[0].x, x, s[0]);
  s[1] = fmaf(a[0].y, x, s[1]);
  s[2] = fmaf(a[0].z, x, s[2]);
  s[3] = fmaf(a[0].w, x, s[3]);
  if (g > 4) {
    s[4] = fmaf(a[1].x, x, s[4]);
    s[5] = fmaf(a[1].y, x, s[5]);
    s[6] = fmaf(a[1].z, x, s[6]);
    s[7] = fmaf(a[1].w, x, s[7]);
  }
}

// Codes e .. e + 7 of a packed LSB-first stream (e a multiple of 8: 16, 32 or 64 aligned bits).
MEMATTN_DEVICE void codes8(const std::uint32_t* words, int e, int bits, float (&x)[8]) {
  const int bit = e * bits;
  const std::uint32_t mask = (1u << bits) - 1u;
  std::uint32_t w = words[bit >> 5] >> (bit & 31);
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    if (j == 4 && bits == 8) w = words[(bit >> 5) + 1];
    x[j] = code_to_float(w & mask);
    w >>= bits;
  }
}

// 8 fp16 values (one 16-byte load where the ring is 16-byte aligned).
MEMATTN_DEVICE void halves8(const Half* p, bool vec, float (&x)[8]) {
  if (vec) {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const std::uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const float2 f = half2_bits(w[j]);
      x[2 * j] = f.x;
      x[2 * j + 1] = f.y;
    }
  } else {
#pragma unroll
    for (int j = 0; j < 8; ++j) x[j] = half_value(p[j]);
  }
}

// butterfly NaN-keeping max: every lane gets the max, NaN if any lane holds one
MEMATTN_DEVICE float warp_nan_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = kivi_nan_max(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

}  // namespace kivi_detail

template <int kThreads = 128>
MEMATTN_KERNEL void __launch_bounds__(kThreads) kivi_decode_kernel(const KiviDecodeParams p) {
  static_assert(kThreads % 32 == 0 && kThreads >= kKiviMaxTile, "a thread per token of a tile");
  constexpr int kWarps = kThreads / 32;
  constexpr int kChannels = (kKiviMaxDim + kThreads - 1) / kThreads;  // value channels per thread
  constexpr int kLaneTokens = kKiviMaxTile / 32;                      // softmax tokens per lane
  namespace kd = kivi_detail;
  const int b = blockIdx.x, h = blockIdx.y;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const KiviCacheView& c = p.cache;
  const int D = c.cfg.head_dim, G = c.cfg.group, R = c.cfg.residual, GV = c.cfg.vg();
  const int g = p.q_heads / c.num_kv_heads;
  const long long N = p.n_tokens[b];
  const long long nq = N - R > 0 ? (N - R) / G * G : 0;
  MEMATTN_SHARED(float4, q_s, [kKiviMaxDim][2]);   // τ q, [channel][heads 0-3, 4-7]; 0 past g
  MEMATTN_SHARED(float4, qs_s, [kKiviMaxDim][2]);  // τ q s of the tile's keys
  MEMATTN_SHARED(float, kz_s, [kKiviMaxDim]);      // key zeros of the tile
  MEMATTN_SHARED(float, part, [kKiviMaxGroup][kThreads]);  // logit partials, [head][slice * nt + token]
  MEMATTN_SHARED(float4, pr, [kKiviMaxTile][2]);   // probabilities, [token][heads]
  MEMATTN_SHARED(float, m_s, [kKiviMaxGroup]);
  MEMATTN_SHARED(float, l_s, [kKiviMaxGroup]);
  MEMATTN_SHARED(float, alpha, [kKiviMaxGroup]);
  for (int ch = tid; ch < D; ch += kThreads) {
    float* qc = reinterpret_cast<float*>(q_s[ch]);
    for (int gi = 0; gi < kKiviMaxGroup; ++gi)
      qc[gi] = gi < g ? p.q[(static_cast<std::size_t>(b) * p.q_heads + h * g + gi) * D + ch] * p.scale : 0.f;
  }
  if (tid < g) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.f;
  }
  float acc[kChannels][kKiviMaxGroup] = {};  // channel tid + k kThreads, query head gi
  __syncthreads();
  // Tiles: quantised blocks, then the ring in chunks of up to G tokens.
  const long long ring_tokens = N - nq;
  const long long tiles = nq / G + (ring_tokens + G - 1) / G;
  long long tile_lo = 0, tile_hi = tiles;
  if (p.ring_slot >= 0) {
    tile_lo = nq / G;
    if (tid == 0) p.n_q_out[static_cast<long long>(b) * c.num_kv_heads + h] = static_cast<int>(nq);
  } else if (p.split_tiles > 0) {
    tile_lo = static_cast<long long>(blockIdx.z) * p.split_tiles;
    tile_lo = tile_lo < tiles ? tile_lo : tiles;
    tile_hi = tile_lo + p.split_tiles < tiles ? tile_lo + p.split_tiles : tiles;
  }
  const std::size_t ring_stride = static_cast<std::size_t>(c.num_kv_heads) * D;  // between ring rows
  const bool ring_vec = ((reinterpret_cast<std::uintptr_t>(c.ring_k) | reinterpret_cast<std::uintptr_t>(c.ring_v)) & 15u) == 0;
  for (long long tile = tile_lo; tile < tile_hi; ++tile) {
    const bool quantised = tile < nq / G;
    const long long t0 = quantised ? tile * G : nq + (tile - nq / G) * G;
    const int T = quantised ? G : static_cast<int>(ring_tokens - (t0 - nq) < G ? ring_tokens - (t0 - nq) : G);
    // a ring tile starts at a multiple of G of the ring (R + G rows): its rows are consecutive
    const std::size_t ring_row0 = quantised ? 0 : c.ring_offset(b, t0, h);
    const quant::BlockView bv{quantised ? c.record(b, static_cast<int>(tile), h) : nullptr, c.cfg, c.layout};
    // 1. Folded query and key zeros (quantised).
    if (quantised) {
      const std::uint32_t* km = reinterpret_cast<const std::uint32_t*>(bv.rec + bv.lay.km);
      for (int ch = tid; ch < D; ch += kThreads) {
        const float2 sz = kd::half2_bits(km[ch]);
        const float* qc = reinterpret_cast<const float*>(q_s[ch]);
        float* qsc = reinterpret_cast<float*>(qs_s[ch]);
        for (int gi = 0; gi < kKiviMaxGroup; ++gi) qsc[gi] = qc[gi] * sz.x;
        kz_s[ch] = sz.y;
      }
      __syncthreads();
    }
    // 2. Logit partials: thread (slice, token), slices of D / S channels (a multiple of 8).
    const int nt = (T + 31) / 32 * 32;
    int S = kThreads / nt;
    while (D % (8 * S) != 0) S >>= 1;
    {
      const int slice = tid / nt, t = tid % nt;
      if (slice < S && t < T) {
        const int c0 = slice * (D / S), c1 = c0 + D / S;
        const float4(*qk)[2] = quantised ? qs_s : q_s;
        const Half* kr = c.ring_k + ring_row0 + t * ring_stride;
        float s[kKiviMaxGroup] = {};
        for (int ch = c0; ch < c1; ch += 8) {
          float k[8];
          if (quantised)
            kd::codes8(bv.kc(), t * D + ch, c.cfg.bits_k, k);
          else
            kd::halves8(kr + ch, ring_vec, k);
#pragma unroll
          for (int j = 0; j < 8; ++j) kd::fma_heads(s, qk[ch + j], k[j], g);
        }
#pragma unroll
        for (int gi = 0; gi < kKiviMaxGroup; ++gi)
          if (gi < g) part[gi][tid] = s[gi];
      }
    }
    __syncthreads();
    // 3. Online softmax update, warp per query head.
    for (int gi = warp; gi < g; gi += kWarps) {
      float beta = 0.f;
      if (quantised) {
        for (int ch = lane; ch < D; ch += 32) beta += reinterpret_cast<const float*>(q_s[ch])[gi] * kz_s[ch];
        beta = warp_sum(beta);
      }
      float lam[kLaneTokens], mx = -INFINITY;
#pragma unroll
      for (int k = 0; k < kLaneTokens; ++k) {
        const int t = lane + 32 * k;
        lam[k] = -INFINITY;
        if (t < T) {
          float x = part[gi][t];
          for (int sl = 1; sl < S; ++sl) x += part[gi][sl * nt + t];
          lam[k] = x + beta;
          mx = kivi_nan_max(mx, lam[k]);
        }
      }
      const float m_old = m_s[gi];
      mx = kivi_nan_max(m_old, kd::warp_nan_max(mx));
      const float a = mx == -INFINITY ? 1.f : expf(m_old - mx);
      float sum = 0.f;
#pragma unroll
      for (int k = 0; k < kLaneTokens; ++k) {
        const int t = lane + 32 * k;
        if (t < T) {
          const float e = expf(lam[k] - mx);
          reinterpret_cast<float*>(pr[t])[gi] = e;
          sum += e;
        }
      }
      sum = warp_sum(sum);
      __syncwarp();  // every lane has read m_s[gi] (racecheck: WAR between lanes 31 and 0 without it)
      if (lane == 0) {
        l_s[gi] = l_s[gi] * a + sum;
        m_s[gi] = mx;
        alpha[gi] = a;
      }
    }
    __syncthreads();
    // 4. Values: thread per channel, tokens streamed, g accumulators in registers.
#pragma unroll
    for (int k = 0; k < kChannels; ++k) {
      const int ch = tid + k * kThreads;
      if (ch >= D) break;
#pragma unroll
      for (int gi = 0; gi < kKiviMaxGroup; ++gi)
        if (gi < g) acc[k][gi] *= alpha[gi];
      if (quantised) {
        const std::uint32_t* vm = reinterpret_cast<const std::uint32_t*>(bv.rec + bv.lay.vm) + (ch / GV) * G;
        for (int t = 0; t < T; t += 8) {
          float code[8];
          kd::codes8(bv.vc(), ch * G + t, c.cfg.bits_v, code);
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            const float2 sz = kd::half2_bits(vm[t + j]);
            kd::fma_heads(acc[k], pr[t + j], fmaf(sz.x, code[j], sz.y), g);
          }
        }
      } else {
        const Half* vr = c.ring_v + ring_row0 + ch;
        for (int t = 0; t < T; t += 8) {  // 8 loads in flight
          float v[8];
#pragma unroll
          for (int j = 0; j < 8; ++j) v[j] = t + j < T ? kd::half_value(vr[(t + j) * ring_stride]) : 0.f;
#pragma unroll
          for (int j = 0; j < 8; ++j)
            if (t + j < T) kd::fma_heads(acc[k], pr[t + j], v[j], g);
        }
      }
    }
  }
  if (p.part_acc != nullptr) {
    const long long slot = p.ring_slot >= 0 ? p.ring_slot : blockIdx.z;
    const long long row0 = ((slot * gridDim.x + b) * c.num_kv_heads + h) * g;  // [slot][b][h] row of head 0
#pragma unroll
    for (int k = 0; k < kChannels; ++k) {
      const int ch = tid + k * kThreads;
      if (ch >= D) break;
#pragma unroll
      for (int gi = 0; gi < kKiviMaxGroup; ++gi)
        if (gi < g) p.part_acc[(row0 + gi) * D + ch] = acc[k][gi];
    }
    if (tid < g) {
      p.part_ml[(row0 + tid) * 2] = m_s[tid];
      p.part_ml[(row0 + tid) * 2 + 1] = l_s[tid];
    }
    return;
  }
#pragma unroll
  for (int k = 0; k < kChannels; ++k) {
    const int ch = tid + k * kThreads;
    if (ch >= D) break;
#pragma unroll
    for (int gi = 0; gi < kKiviMaxGroup; ++gi)
      if (gi < g) p.o[(static_cast<std::size_t>(b) * p.q_heads + h * g + gi) * D + ch] = acc[k][gi] / l_s[gi];
  }
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
