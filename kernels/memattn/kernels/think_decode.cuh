// ThinK two-segment decode attention on the GPU (spec eviction.md §3.6, §5.7): one query token per
// sequence over [old segment: d_keep kept key channels | new segment: full-width keys], one online
// softmax, values full width, tau = 1/sqrt(d) of the full d. The CTA gathers q[ch] of its group
// into shared memory once; old-segment logits use d_keep channels, new-segment logits all d.
// Same token order and math as the CPU composed cache (cpu/composed_kv_cache.hpp).
//
// Split-KV CUDA-core kernel: grid (segments = B * Hkv, splits), 128 threads; a split walks its
// token range in tiles of 32 tokens:
//   * K rows of the tile -> shared memory as fp32 (one warp per row, lanes over channels: coalesced
//     whatever d_keep is), zero-padded to a multiple of 4 channels: float4 dot products with four
//     independent accumulators; the row stride is an odd number of float4 (no bank conflicts);
//   * V: thread c loads column c of the tile's 32 rows into registers at the start of the tile
//     (coalesced, each element read once per CTA), overlapping the K staging and the scores;
//   * scores: one (head, token) per thread (warp = one head: q[ch] is a broadcast), online softmax
//     per head by one warp (shuffle max/sum), then acc[g][c] += p[g][t] * v[t][c] in registers
//     (p read as float4 broadcasts).
// GQA read-once: all g query heads of a KV head share each K/V row. With one split the kernel
// writes o; with several it writes (m, l, acc) partials and think_combine_kernel merges them.
// Value extension (v_channels set, prune/think.hpp vprune): old tokens' values are dv_keep kept
// channels in v_old, `v` then holds the new tokens only; thread c reads channel c's slot in the
// kept list (found once per CTA), a pruned channel of an old token is 0.
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
  const Half* v;                  // rows of head_dim halves (old tokens, then new; only new with v_channels),
  long long v_seg_stride;         // at v + s * v_seg_stride
  const int* n_old;               // [segments]
  const int* n_new;               // [segments]
  const float* q;                 // [B][Hq][D]
  float* o;                       // [B][Hq][D]
  int batch, q_heads, kv_heads, head_dim;
  float scale;                    // tau (of the full head_dim)
  // value extension (optional, nullptr = values full width in v):
  const Half* v_old;              // old tokens' values, rows of old_v_row_stride (>= dv_keep), at v_old + s * v_old_seg_stride
  long long v_old_seg_stride;
  int old_v_row_stride;
  const std::uint8_t* v_channels; // [segments][dv_keep] kept value channels
  int dv_keep;
};

constexpr int kThinKMaxGroup = 8;
constexpr int kThinKMaxDim = 256;
constexpr int kThinKTile = 32;     // tokens per tile (= warp size: lane r holds token r's score)
constexpr int kThinKThreads = 128;

// Split-KV partials, [splits][segments][group][head_dim] and [splits][segments][group][2] (m, l).
struct ThinKSplit {
  int splits = 1;
  int split_keys = 0;  // tokens per split (a multiple of kThinKTile); 0: all
  float* acc = nullptr;
  float* ml = nullptr;
};

MEMATTN_DEVICE float think_nan_max(float a, float b) { return (a != a) ? a : ((b != b) ? b : (b > a ? b : a)); }

// Shared-memory geometry (fp32): q [G][Dp], q[ch] [G][dk4], K tile [T][kstride], p [G][T], with
// Dp = D and dk4 = d_keep rounded up to 4 (zero padding, so float4 dot products need no tail) and
// an odd number of float4 per K row (16-byte reads of 8 consecutive rows hit distinct banks).
struct ThinKSmem {
  int dp, dk4, kstride;
  MEMATTN_HOST_DEVICE ThinKSmem(int head_dim, int d_keep)
      : dp((head_dim + 3) / 4 * 4), dk4((d_keep + 3) / 4 * 4), kstride(((dp / 4) % 2 == 0 ? dp / 4 + 1 : dp / 4 + 2) * 4) {}
  MEMATTN_HOST_DEVICE int bytes(int group) const {
    return 4 * (group * dp + group * dk4 + kThinKTile * kstride + group * kThinKTile);
  }
};

// kCh: value channels per thread (1 for head_dim <= 128, 2 up to 256).
template <int kCh>
MEMATTN_KERNEL void __launch_bounds__(kThinKThreads, kCh == 1 ? 4 : 3)
think_decode_kernel(const ThinKDecodeParams p, const ThinKSplit sp) {
  extern __shared__ float4 think_smem4[];
  __shared__ float m_s[kThinKMaxGroup], l_s[kThinKMaxGroup], alpha_s[kThinKMaxGroup];
  __shared__ short vslot_s[kThinKMaxDim];  // value extension: channel c's slot in the kept list (-1: pruned)
  const long long s = blockIdx.x;
  const int split = blockIdx.y;
  const int b = static_cast<int>(s / p.kv_heads), h = static_cast<int>(s % p.kv_heads);
  const int D = p.head_dim, dk = p.d_keep, G = p.q_heads / p.kv_heads;
  const ThinKSmem geo(D, dk);
  const int Dp = geo.dp, dk4 = geo.dk4, ks = geo.kstride;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  float* q_s = reinterpret_cast<float*>(think_smem4);  // [G][Dp], scaled by tau
  float* qc_s = q_s + G * Dp;                           // [G][dk4]
  float* kt = qc_s + G * dk4;                           // [T][ks]
  float* p_s = kt + kThinKTile * ks;                    // [G][T]
  const int n_old = p.n_old[s], total = n_old + p.n_new[s];
  const int t_lo = sp.split_keys > 0 ? split * sp.split_keys : 0;
  const int t_hi = sp.split_keys > 0 ? min(total, t_lo + sp.split_keys) : total;
  const std::uint8_t* ch = p.channels + s * dk;
  const float* qg = p.q + (static_cast<long long>(b) * p.q_heads + h * G) * D;
  for (int i = tid; i < G * Dp; i += kThinKThreads) {
    const int g = i / Dp, c = i % Dp;
    q_s[i] = c < D ? qg[g * D + c] * p.scale : 0.f;
  }
  if (tid < G) {
    m_s[tid] = -INFINITY;
    l_s[tid] = 0.f;
  }
  __syncthreads();
  for (int i = tid; i < G * dk4; i += kThinKThreads) {
    const int g = i / dk4, c = i % dk4;
    qc_s[i] = c < dk ? q_s[g * Dp + ch[c]] : 0.f;
  }
  const Half* k_old = p.k_old + s * p.old_seg_stride;
  const Half* k_new = p.k_new + s * p.new_seg_stride;
  const Half* v = p.v + s * p.v_seg_stride;
  const int v_new0 = p.v_channels != nullptr ? n_old : 0;  // token index of v's first row
  if (p.v_channels != nullptr) {  // block-uniform
    for (int c = tid; c < D; c += kThinKThreads) vslot_s[c] = -1;
    __syncthreads();
    for (int i = tid; i < p.dv_keep; i += kThinKThreads) vslot_s[p.v_channels[s * p.dv_keep + i]] = static_cast<short>(i);
    __syncthreads();
  }
  float acc[kThinKMaxGroup][kCh];
#pragma unroll
  for (int g = 0; g < kThinKMaxGroup; ++g)
#pragma unroll
    for (int u = 0; u < kCh; ++u) acc[g][u] = 0.f;

  for (int t0 = t_lo; t0 < t_hi;) {
    // value extension: a tile is all old or all new (v_new0 = 0 without it)
    const int nt = min(kThinKTile, (t0 < v_new0 ? min(t_hi, v_new0) : t_hi) - t0);
    // V column(s) of this thread for the tile, in flight while K is staged and scored.
    Half vv[kCh][kThinKTile];
#pragma unroll
    for (int u = 0; u < kCh; ++u) {
      const int c = tid + u * kThinKThreads;
      const bool old_tile = t0 < v_new0;
      const int slot = old_tile && c < D ? vslot_s[c] : -1;
      const Half* vb = old_tile ? p.v_old + s * p.v_old_seg_stride + static_cast<long long>(t0) * p.old_v_row_stride + slot
                                : v + static_cast<long long>(t0 - v_new0) * D + c;
      const int vs = old_tile ? p.old_v_row_stride : D;
      const bool ok = old_tile ? slot >= 0 : c < D;
#pragma unroll
      for (int r = 0; r < kThinKTile; ++r) vv[u][r] = (ok && r < nt) ? vb[static_cast<long long>(r) * vs] : Half{};
    }
    // K rows -> shared fp32, zero-padded (old rows: d_keep channels, new rows: D).
#pragma unroll
    for (int rr = 0; rr < kThinKTile / 4; ++rr) {
      const int r = warp + 4 * rr, t = t0 + r;
      if (r >= nt) continue;
      float* row = kt + r * ks;
      if (t < n_old) {
        const Half* kr = k_old + static_cast<long long>(t) * p.old_row_stride;
        for (int c = lane; c < dk4; c += 32) row[c] = c < dk ? half_to_float(kr[c]) : 0.f;
      } else {
        const Half* kr = k_new + static_cast<long long>(t - n_old) * D;
        for (int c = lane; c < Dp; c += 32) row[c] = c < D ? half_to_float(kr[c]) : 0.f;
      }
    }
    __syncthreads();
    // Scores: warp w takes heads w, w + 4; lane = token of the tile.
    for (int g = warp; g < G; g += 4) {
      float sc = -INFINITY;
      if (lane < nt) {
        const bool old = t0 + lane < n_old;
        const float4* kr = reinterpret_cast<const float4*>(kt + lane * ks);
        const float4* qv = reinterpret_cast<const float4*>(old ? qc_s + g * dk4 : q_s + g * Dp);
        const int n4 = (old ? dk4 : Dp) / 4;
        float a0 = 0.f, a1 = 0.f, a2 = 0.f, a3 = 0.f;
        for (int i = 0; i < n4; ++i) {
          const float4 x = qv[i], y = kr[i];
          a0 = fmaf(x.x, y.x, a0);
          a1 = fmaf(x.y, y.y, a1);
          a2 = fmaf(x.z, y.z, a2);
          a3 = fmaf(x.w, y.w, a3);
        }
        sc = (a0 + a1) + (a2 + a3);
      }
      float mx = sc;
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) mx = think_nan_max(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float m_old = m_s[g];
      const float m_new = think_nan_max(m_old, mx);
      const float e = lane < nt ? expf(sc - m_new) : 0.f;
      float sum = e;
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
      p_s[g * kThinKTile + lane] = e;
      __syncwarp();
      if (lane == 0) {
        const float a = m_old == -INFINITY ? 0.f : expf(m_old - m_new);
        l_s[g] = l_s[g] * a + sum;
        m_s[g] = m_new;
        alpha_s[g] = a;
      }
    }
    __syncthreads();
#pragma unroll
    for (int g = 0; g < kThinKMaxGroup; ++g)
#pragma unroll
      for (int u = 0; u < kCh; ++u)
        if (g < G) acc[g][u] *= alpha_s[g];
#pragma unroll
    for (int r4 = 0; r4 < kThinKTile / 4; ++r4) {
      float vf[kCh][4];
#pragma unroll
      for (int u = 0; u < kCh; ++u)
#pragma unroll
        for (int i = 0; i < 4; ++i) vf[u][i] = half_to_float(vv[u][r4 * 4 + i]);
#pragma unroll
      for (int g = 0; g < kThinKMaxGroup; ++g) {
        if (g >= G) break;
        const float4 pp = reinterpret_cast<const float4*>(p_s + g * kThinKTile)[r4];
#pragma unroll
        for (int u = 0; u < kCh; ++u) {
          float a = acc[g][u];
          a = fmaf(pp.x, vf[u][0], a);
          a = fmaf(pp.y, vf[u][1], a);
          a = fmaf(pp.z, vf[u][2], a);
          a = fmaf(pp.w, vf[u][3], a);
          acc[g][u] = a;
        }
      }
    }
    __syncthreads();
    t0 += nt;
  }
  if (sp.splits == 1) {
#pragma unroll
    for (int u = 0; u < kCh; ++u) {
      const int c = tid + u * kThinKThreads;
      if (c >= D) continue;
#pragma unroll
      for (int g = 0; g < kThinKMaxGroup; ++g)  // constant indices: acc stays in registers
        if (g < G) p.o[(static_cast<long long>(b) * p.q_heads + h * G + g) * D + c] = acc[g][u] / l_s[g];
    }
    return;
  }
  const long long slot = static_cast<long long>(split) * gridDim.x + s;
#pragma unroll
  for (int u = 0; u < kCh; ++u) {
    const int c = tid + u * kThinKThreads;
    if (c >= D) continue;
#pragma unroll
    for (int g = 0; g < kThinKMaxGroup; ++g)
      if (g < G) sp.acc[(slot * G + g) * D + c] = acc[g][u];
  }
  if (tid < G) {
    sp.ml[(slot * G + tid) * 2] = m_s[tid];
    sp.ml[(slot * G + tid) * 2 + 1] = l_s[tid];
  }
}

// o[g][c] = sum_i acc_i[g][c] w_i / sum_i l_i w_i, w_i = exp(m_i - max m) (empty splits: w = 0).
// grid = segments, block = kThinKThreads.
MEMATTN_KERNEL void __launch_bounds__(kThinKThreads) think_combine_kernel(const ThinKDecodeParams p, const ThinKSplit sp) {
  const long long s = blockIdx.x, S = gridDim.x;
  const int b = static_cast<int>(s / p.kv_heads), h = static_cast<int>(s % p.kv_heads);
  const int D = p.head_dim, G = p.q_heads / p.kv_heads;
  for (int i = threadIdx.x; i < G * D; i += kThinKThreads) {
    const int g = i / D, c = i % D;
    float m = -INFINITY;
    for (int k = 0; k < sp.splits; ++k) m = think_nan_max(m, sp.ml[((k * S + s) * G + g) * 2]);
    float num = 0.f, den = 0.f;
    for (int k = 0; k < sp.splits; ++k) {
      const float mk = sp.ml[((k * S + s) * G + g) * 2];
      if (mk == -INFINITY) continue;
      const float w = expf(mk - m);
      num = fmaf(sp.acc[((k * S + s) * G + g) * D + c], w, num);
      den = fmaf(sp.ml[((k * S + s) * G + g) * 2 + 1], w, den);
    }
    p.o[(static_cast<long long>(b) * p.q_heads + h * G + g) * D + c] = num / den;
  }
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
