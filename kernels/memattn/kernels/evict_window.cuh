// Observation-window eviction scores on the GPU (spec eviction.md §4.1, §3.4, §3.10, §3.11): the
// CUDA path of cpu::window_colsum / cpu::pool_scores (cpu/evict_scores.hpp), of WindowKV's window
// scores (evict::WindowBlock::unit_scores) and of CompressKV's head-subset scores
// (cpu::head_subset_window_scores), without an N x N matrix.
//
// A segment is one (sequence b, unit u): u = KV head h (GQA: its G query heads are the rows'
// heads, reduced mean|max|sum after the window sum), or u = a selected query head (head subset,
// CompressKV: that head alone against KV head hq / G). Rows r = i * gc + g (window token i, head g
// of the segment's gc heads), query i at position qpos[i] sees keys with kpos[j] <= qpos[i].
//
//   window_lse_kernel      pass 1, grid (splits, segments): a CTA walks the key tiles of its split,
//                          online (max, sum) of tau*q.k per row in shared memory; one split writes
//                          the natural-log LSE, several write (m, l) partials that
//   window_lse_combine_kernel merges (split order).
//   window_colsum_kernel   pass 2, grid (key tiles, segments): a CTA owns kWindowTile keys (read
//                          once, converted to fp32 in shared memory) and loops over chunks of
//                          query rows; thread (column c, head g) adds exp(s - lse) over the window
//                          tokens in increasing order (the CPU's order: same fp32 sums, no
//                          atomics), then col[j] = R_g(...) with evict::group_combine/finish.
//   window_pool_kernel     stride-1 pooling (avg|max, odd kernel, count_include_pad) of one row, or
//                          the mean of the pools of several rows (CompressKV: over the selected
//                          heads, summed in head order then times 1/n like the CPU).
//   windowkv_stats_kernel / windowkv_rank_kernel   WindowKV: per-token head mean and per-window
//                          score (average | top-R/2 "max") in fp64 in the CPU's order, then the
//                          rank-encoded slot scores -(rank(window) * R + rank inside the window).
//
// Logits: s = sum_d (tau * q_d) * k_d, tau * q rounded to fp32 first as on the CPU; the dot product
// order differs from Eigen's, so column sums match the CPU to fp32 rounding of the logits (about
// 1e-6 relative per term), not bit for bit. Pooling and the WindowKV / CompressKV reductions repeat
// the CPU's operations in its order: given the same column sums they are bit-identical.
// A row that sees no key (the CPU returns kErrorEmptyCache) gets lse = -inf and contributes 0.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/core/config.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/evict/policy.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

constexpr int kWindowThreads = 128;
constexpr int kWindowTile = 64;         // keys per CTA tile (16 column groups x 4 columns)
constexpr int kWindowChunk = 64;        // query rows per chunk (8 row groups x 8 rows)
constexpr int kWindowMaxGroup = 8;      // query heads reduced per segment (GQA mode)
constexpr int kWindowMaxDim = 256;      // head_dim: multiple of 8, <= 256
constexpr int kWindowMaxRows = 1024;    // w * (heads per segment): pass 1 keeps (m, l) per row in smem
constexpr int kWindowMaxSelHeads = 64;  // head-subset mode (CompressKV)
constexpr int kWindowPStride = kWindowTile + 16;  // P tile row stride: two row groups of a warp hit distinct banks
constexpr int kWindowPoolThreads = 256;
constexpr int kWindowKvThreads = 128;

template <class TQ, class TK>
struct WindowColsumParams {
  // Window query (b, i, hq) at q + b*q_stride[0] + i*q_stride[1] + hq*q_stride[2], head_dim
  // contiguous, post-RoPE, unscaled (fp32 or 16-bit). 16-byte aligned rows.
  const TQ* q = nullptr;
  std::int64_t q_stride[3] = {};
  const std::int32_t* qpos = nullptr;  // [B][w] at qpos + b*qpos_stride + i
  std::int64_t qpos_stride = 0;
  // Key j of segment (b, h) at k + b*k_stride[0] + h*k_stride[1] + j*k_stride[2] (16-byte aligned rows).
  const TK* k = nullptr;
  std::int64_t k_stride[3] = {};
  const std::int32_t* kpos = nullptr;  // kpos + b*kpos_stride[0] + h*kpos_stride[1] + j
  std::int64_t kpos_stride[2] = {};
  const std::int32_t* lens = nullptr;  // [B * kv_heads] keys per (b, h) (device), clamped to max_keys; nullptr: max_keys
  // Optional natural-log LSE of tau*q.k under the same mask, (b, i, hq) at lse + b*lse_stride[0] +
  // i*lse_stride[1] + hq*lse_stride[2]; nullptr: pass 1 computes it into the workspace.
  const float* lse = nullptr;
  std::int64_t lse_stride[3] = {};
  // Column sums of unit u of sequence b at col + b*col_stride[0] + u*col_stride[1], slots j < len.
  float* col = nullptr;
  std::int64_t col_stride[2] = {};
  int batch = 0, q_heads = 0, kv_heads = 0, head_dim = 0, window = 0;
  int max_keys = 0;  // host bound on every segment's length (sizes the grid; keys beyond are not read)
  float scale = 0.f;  // tau
  int reduce = 0;     // evict::GroupReduce: 0 mean, 1 max, 2 sum
};

// Head-subset mode: count > 0 selects query heads; unit u of a sequence is q_head[u] alone.
struct WindowHeads {
  int count = 0;
  int q_head[kWindowMaxSelHeads] = {};
};

// Launch geometry and pass-1 / pass-2 plumbing filled by the host wrapper.
struct WindowPlan {
  int units = 0;                // segments per sequence (kv_heads or selected heads)
  int group = 1;                // q_heads / kv_heads
  int splits = 1;               // pass-1 key splits per segment
  int tiles_per_split = 0;      // pass-1 key tiles per split
  float* lse_out = nullptr;     // pass 1 / combine: LSE (b, i, hq) with lse_stride
  const float* lse_in = nullptr;  // pass 2
  std::int64_t lse_stride[3] = {};
  float2* partial = nullptr;    // [segments][splits][rows] (m, l) when splits > 1
  WindowHeads heads;
};

// Shared-memory carving (fp32 unless noted): K tile [kWindowTile][ks], Q chunk [kWindowChunk][ks],
// P tile [kWindowChunk][kWindowPStride] (pass 2) or (m, l) per row (pass 1), then per-chunk row
// LSE / positions and the tile's key positions. ks: an odd number of float4 >= head_dim, so the 8
// distinct rows of a quarter-warp's 16-byte reads hit distinct banks.
struct WindowSmem {
  int ks;
  MEMATTN_HOST_DEVICE explicit WindowSmem(int head_dim) : ks(((head_dim / 4) % 2 == 0 ? head_dim / 4 + 1 : head_dim / 4) * 4) {}
  MEMATTN_HOST_DEVICE int tiles_floats() const { return (kWindowTile + kWindowChunk) * ks; }
  MEMATTN_HOST_DEVICE int colsum_bytes() const {
    return 4 * (tiles_floats() + kWindowChunk * kWindowPStride + kWindowChunk + kWindowChunk + kWindowTile);
  }
  MEMATTN_HOST_DEVICE int lse_bytes() const { return 4 * (tiles_floats() + 2 * kWindowMaxRows + kWindowChunk + kWindowTile); }
};

struct WindowSegment {
  int b, h, hq0, gc, len;
};

template <class TQ, class TK>
MEMATTN_DEVICE WindowSegment window_segment(const WindowColsumParams<TQ, TK>& p, const WindowPlan& pl, int seg) {
  WindowSegment s;
  s.b = seg / pl.units;
  const int u = seg % pl.units;
  if (pl.heads.count > 0) {
    s.hq0 = pl.heads.q_head[u];
    s.h = s.hq0 / pl.group;
    s.gc = 1;
  } else {
    s.h = u;
    s.hq0 = u * pl.group;
    s.gc = pl.group;
  }
  const int n = p.lens ? p.lens[s.b * p.kv_heads + s.h] : p.max_keys;
  s.len = n < 0 ? 0 : (n > p.max_keys ? p.max_keys : n);
  return s;
}

// 16 bytes of T -> fp32 (8 halves / bf16 or 4 floats).
template <class T>
struct WindowVec {
  static constexpr int kN = 16 / static_cast<int>(sizeof(T));
  MEMATTN_DEVICE static void load(const T* src, float* dst) {
    const uint4 raw = *reinterpret_cast<const uint4*>(src);
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int x = 0; x < kN; ++x) dst[x] = to_float(e[x]);
  }
};

// Keys [j0, j0 + kWindowTile) of the segment -> ks_s (zeros beyond len), positions -> kp_s.
// Lane <-> key: the 8 keys of a quarter-warp's 16-byte smem stores land in distinct banks.
template <class TQ, class TK>
MEMATTN_DEVICE void window_stage_keys(const WindowColsumParams<TQ, TK>& p, const WindowSegment& s, int j0, float* ks_s,
                                      int ks, int* kp_s) {
  constexpr int kV = WindowVec<TK>::kN;
  const int D = p.head_dim, nv = D / kV;
  const TK* kb = p.k + s.b * p.k_stride[0] + s.h * p.k_stride[1];
  for (int idx = threadIdx.x; idx < kWindowTile * nv; idx += kWindowThreads) {
    const int c = idx % kWindowTile, d0 = (idx / kWindowTile) * kV;
    float v[kV];
    if (j0 + c < s.len) {
      WindowVec<TK>::load(kb + static_cast<std::int64_t>(j0 + c) * p.k_stride[2] + d0, v);
    } else {
#pragma unroll
      for (int x = 0; x < kV; ++x) v[x] = 0.f;
    }
#pragma unroll
    for (int x = 0; x < kV; x += 4)
      *reinterpret_cast<float4*>(ks_s + c * ks + d0 + x) = make_float4(v[x], v[x + 1], v[x + 2], v[x + 3]);
  }
  if (threadIdx.x < kWindowTile) {
    const int j = j0 + static_cast<int>(threadIdx.x);
    kp_s[threadIdx.x] = j < s.len ? p.kpos[s.b * p.kpos_stride[0] + s.h * p.kpos_stride[1] + j] : 0;
  }
}

// Window tokens [i0, i0 + nt) -> query rows (tau * q, fp32, zeros up to kWindowChunk rows) and
// the rows' positions.
template <class TQ, class TK>
MEMATTN_DEVICE void window_stage_queries(const WindowColsumParams<TQ, TK>& p, const WindowSegment& s, int i0, int nt,
                                         float* qs_s, int ks, int* qp_s) {
  constexpr int kV = WindowVec<TQ>::kN;
  const int D = p.head_dim, nv = D / kV, nr = nt * s.gc;
  const TQ* qb = p.q + s.b * p.q_stride[0] + static_cast<std::int64_t>(s.hq0) * p.q_stride[2];
  for (int idx = threadIdx.x; idx < kWindowChunk * nv; idx += kWindowThreads) {
    const int r = idx % kWindowChunk, d0 = (idx / kWindowChunk) * kV;
    float v[kV];
    if (r < nr) {
      const int i = i0 + r / s.gc, g = r % s.gc;
      WindowVec<TQ>::load(qb + i * p.q_stride[1] + g * p.q_stride[2] + d0, v);
#pragma unroll
      for (int x = 0; x < kV; ++x) v[x] *= p.scale;  // as the CPU: (tau * q) in fp32, then the dot product
    } else {
#pragma unroll
      for (int x = 0; x < kV; ++x) v[x] = 0.f;
    }
#pragma unroll
    for (int x = 0; x < kV; x += 4)
      *reinterpret_cast<float4*>(qs_s + r * ks + d0 + x) = make_float4(v[x], v[x + 1], v[x + 2], v[x + 3]);
  }
  if (threadIdx.x < kWindowChunk) {
    const int r = static_cast<int>(threadIdx.x);
    qp_s[r] = r < nr ? p.qpos[s.b * p.qpos_stride + i0 + r / s.gc] : 0;
  }
}

// s[v][u] = q_row(ry + 8v) . k_col(cg + 16u), fp32 fma in channel order. Rows of a quarter-warp
// are one broadcast; its 8 columns are 8 consecutive K rows (distinct banks).
MEMATTN_DEVICE void window_dot_tile(const float* qs_s, const float* ks_s, int ks, int D, int ry, int cg,
                                    float (&s)[8][4]) {
#pragma unroll
  for (int v = 0; v < 8; ++v)
#pragma unroll
    for (int u = 0; u < 4; ++u) s[v][u] = 0.f;
  const float4* q4 = reinterpret_cast<const float4*>(qs_s);
  const float4* k4 = reinterpret_cast<const float4*>(ks_s);
  const int s4 = ks / 4;
#pragma unroll 2
  for (int d4 = 0; d4 < D / 4; ++d4) {
    float4 kv[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) kv[u] = k4[(cg + 16 * u) * s4 + d4];
#pragma unroll
    for (int v = 0; v < 8; ++v) {
      const float4 qv = q4[(ry + 8 * v) * s4 + d4];
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        s[v][u] = fmaf(qv.x, kv[u].x, s[v][u]);
        s[v][u] = fmaf(qv.y, kv[u].y, s[v][u]);
        s[v][u] = fmaf(qv.z, kv[u].z, s[v][u]);
        s[v][u] = fmaf(qv.w, kv[u].w, s[v][u]);
      }
    }
  }
}

// Pass 1: grid (splits, segments), kWindowThreads threads.
template <class TQ, class TK>
MEMATTN_KERNEL void __launch_bounds__(kWindowThreads)
    window_lse_kernel(const WindowColsumParams<TQ, TK> p, const WindowPlan pl) {
  MEMATTN_DYNAMIC_SMEM(float4, window_smem4);
  const int seg = static_cast<int>(blockIdx.y), split = static_cast<int>(blockIdx.x);
  const WindowSegment s = window_segment(p, pl, seg);
  const WindowSmem geo(p.head_dim);
  float* ks_s = reinterpret_cast<float*>(window_smem4);
  float* qs_s = ks_s + kWindowTile * geo.ks;
  float2* ml_s = reinterpret_cast<float2*>(qs_s + kWindowChunk * geo.ks);
  int* qp_s = reinterpret_cast<int*>(ml_s + kWindowMaxRows);
  int* kp_s = qp_s + kWindowChunk;
  const int tid = static_cast<int>(threadIdx.x), cg = tid & 15, ry = tid >> 4;
  const int rows = p.window * s.gc;
  const int tok_chunk = kWindowChunk / s.gc;
  const bool one_chunk = p.window <= tok_chunk;
  for (int r = tid; r < rows; r += kWindowThreads) ml_s[r] = make_float2(-INFINITY, 0.f);
  const int tiles = (s.len + kWindowTile - 1) / kWindowTile;
  const int t_lo = split * pl.tiles_per_split;
  const int t_hi = min(tiles, t_lo + pl.tiles_per_split);
  bool q_ready = false;
  for (int t = t_lo; t < t_hi; ++t) {
    const int j0 = t * kWindowTile;
    __syncthreads();  // the previous tile's dot products are done with ks_s
    window_stage_keys(p, s, j0, ks_s, geo.ks, kp_s);
    for (int i0 = 0; i0 < p.window; i0 += tok_chunk) {
      const int nt = min(tok_chunk, p.window - i0), nr = nt * s.gc;
      if (!q_ready) {
        __syncthreads();  // the previous chunk's dot products are done with qs_s
        window_stage_queries(p, s, i0, nt, qs_s, geo.ks, qp_s);
        q_ready = one_chunk;  // a single chunk stays resident for every tile
      }
      __syncthreads();
      float sc[8][4];
      window_dot_tile(qs_s, ks_s, geo.ks, p.head_dim, ry, cg, sc);
#pragma unroll
      for (int v = 0; v < 8; ++v) {
        const int r = ry + 8 * v;
        float tmax = -INFINITY;
#pragma unroll
        for (int u = 0; u < 4; ++u) {
          const int c = cg + 16 * u;
          const bool vis = r < nr && j0 + c < s.len && kp_s[c] <= qp_s[r];
          sc[v][u] = vis ? sc[v][u] : -INFINITY;
          tmax = fmaxf(tmax, sc[v][u]);
        }
        // The 16 lanes of a row are lanes 0-15 or 16-31 of the warp; shuffles run on every lane.
#pragma unroll
        for (int o = 8; o > 0; o >>= 1) tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, o));
        const int rr = i0 * s.gc + r;
        const float2 ml = r < nr ? ml_s[rr] : make_float2(-INFINITY, 0.f);
        const float mn = fmaxf(ml.x, tmax);
        float e = 0.f;
        if (mn != -INFINITY) {
#pragma unroll
          for (int u = 0; u < 4; ++u) e += expf(sc[v][u] - mn);  // masked: exp(-inf) = 0
        }
#pragma unroll
        for (int o = 8; o > 0; o >>= 1) e += __shfl_xor_sync(0xffffffffu, e, o);
        __syncwarp();
        if (cg == 0 && r < nr && mn != -INFINITY) ml_s[rr] = make_float2(mn, ml.y * expf(ml.x - mn) + e);
      }
    }
  }
  __syncthreads();
  for (int rr = tid; rr < rows; rr += kWindowThreads) {
    const float2 ml = ml_s[rr];
    if (pl.splits > 1) {
      pl.partial[(static_cast<std::int64_t>(seg) * pl.splits + split) * rows + rr] = ml;
    } else {
      const int i = rr / s.gc, g = rr % s.gc;
      pl.lse_out[s.b * pl.lse_stride[0] + i * pl.lse_stride[1] + (s.hq0 + g) * pl.lse_stride[2]] =
          ml.y > 0.f ? ml.x + logf(ml.y) : -INFINITY;
    }
  }
}

// Merges the splits' (m, l) partials in split order: grid segments, kWindowThreads threads.
template <class TQ, class TK>
MEMATTN_KERNEL void __launch_bounds__(kWindowThreads)
    window_lse_combine_kernel(const WindowColsumParams<TQ, TK> p, const WindowPlan pl) {
  const int seg = static_cast<int>(blockIdx.x);
  const WindowSegment s = window_segment(p, pl, seg);
  const int rows = p.window * s.gc;
  for (int rr = static_cast<int>(threadIdx.x); rr < rows; rr += kWindowThreads) {
    const float2* part = pl.partial + static_cast<std::int64_t>(seg) * pl.splits * rows + rr;
    float m = -INFINITY;
    for (int x = 0; x < pl.splits; ++x) m = fmaxf(m, part[x * rows].x);
    float l = 0.f;
    if (m != -INFINITY)
      for (int x = 0; x < pl.splits; ++x) {
        const float2 ml = part[x * rows];
        if (ml.x != -INFINITY) l += ml.y * expf(ml.x - m);
      }
    const int i = rr / s.gc, g = rr % s.gc;
    pl.lse_out[s.b * pl.lse_stride[0] + i * pl.lse_stride[1] + (s.hq0 + g) * pl.lse_stride[2]] =
        l > 0.f ? m + logf(l) : -INFINITY;
  }
}

// Pass 2: grid (ceil(max_keys / kWindowTile), segments), kWindowThreads threads.
template <class TQ, class TK>
MEMATTN_KERNEL void __launch_bounds__(kWindowThreads)
    window_colsum_kernel(const WindowColsumParams<TQ, TK> p, const WindowPlan pl) {
  MEMATTN_DYNAMIC_SMEM(float4, window_smem4);
  const int seg = static_cast<int>(blockIdx.y);
  const WindowSegment s = window_segment(p, pl, seg);
  const int j0 = static_cast<int>(blockIdx.x) * kWindowTile;
  if (j0 >= s.len) return;
  const WindowSmem geo(p.head_dim);
  float* ks_s = reinterpret_cast<float*>(window_smem4);
  float* qs_s = ks_s + kWindowTile * geo.ks;
  float* ps_s = qs_s + kWindowChunk * geo.ks;
  float* lse_s = ps_s + kWindowChunk * kWindowPStride;
  int* qp_s = reinterpret_cast<int*>(lse_s + kWindowChunk);
  int* kp_s = qp_s + kWindowChunk;
  const int tid = static_cast<int>(threadIdx.x), cg = tid & 15, ry = tid >> 4;
  const int tok_chunk = kWindowChunk / s.gc;  // whole window tokens per chunk: every head of a token in one chunk
  window_stage_keys(p, s, j0, ks_s, geo.ks, kp_s);
  float acc[kWindowMaxGroup];
#pragma unroll
  for (int g = 0; g < kWindowMaxGroup; ++g) acc[g] = 0.f;
  for (int i0 = 0; i0 < p.window; i0 += tok_chunk) {
    const int nt = min(tok_chunk, p.window - i0), nr = nt * s.gc;
    __syncthreads();  // the previous chunk's column sums are done with ps_s (and its dot products with qs_s)
    window_stage_queries(p, s, i0, nt, qs_s, geo.ks, qp_s);
    if (tid < kWindowChunk) {
      const int i = i0 + tid / s.gc, g = tid % s.gc;
      lse_s[tid] = tid < nr ? pl.lse_in[s.b * pl.lse_stride[0] + i * pl.lse_stride[1] + (s.hq0 + g) * pl.lse_stride[2]] : 0.f;
    }
    __syncthreads();
    float sc[8][4];
    window_dot_tile(qs_s, ks_s, geo.ks, p.head_dim, ry, cg, sc);
#pragma unroll
    for (int v = 0; v < 8; ++v) {
      const int r = ry + 8 * v;
#pragma unroll
      for (int u = 0; u < 4; ++u) {
        const int c = cg + 16 * u;
        const bool vis = r < nr && j0 + c < s.len && kp_s[c] <= qp_s[r];
        ps_s[r * kWindowPStride + c] = vis ? expf(sc[v][u] - lse_s[r]) : 0.f;
      }
    }
    __syncthreads();
    if (tid < kWindowTile) {
      // Column tid, every head of every token of the chunk, tokens in increasing order.
      for (int t = 0; t < nt; ++t) {
        const float* pr = ps_s + t * s.gc * kWindowPStride + tid;
#pragma unroll
        for (int g = 0; g < kWindowMaxGroup; ++g)
          if (g < s.gc) acc[g] += pr[g * kWindowPStride];
      }
    }
  }
  const int j = j0 + tid;
  if (tid < kWindowTile && j < s.len) {
    const auto red = static_cast<evict::GroupReduce>(p.reduce);
    float a = 0.f;
#pragma unroll
    for (int g = 0; g < kWindowMaxGroup; ++g)
      if (g < s.gc) a = evict::group_combine(red, a, acc[g], g);
    const int u = static_cast<int>(seg % pl.units);
    p.col[s.b * p.col_stride[0] + u * p.col_stride[1] + j] = evict::group_finish(red, a, s.gc);
  }
}

// ---- pooling ---------------------------------------------------------------------------------------

struct WindowPoolParams {
  // Row r of sequence b at in + b*in_stride[0] + r*in_stride[1]; unit u pools rows
  // [u*rows_per_unit, (u+1)*rows_per_unit) and averages them (1: plain pooling).
  const float* in = nullptr;
  std::int64_t in_stride[2] = {};
  int rows_per_unit = 1;
  // Unit u of sequence b at out + b*out_stride[0] + u*out_stride[1].
  float* out = nullptr;
  std::int64_t out_stride[2] = {};
  const std::int32_t* count = nullptr;  // [B * units] pooled region [0, count) (device; clamped to max_len)
  const std::int32_t* lens = nullptr;   // [B * units] optional: out = 0 on [count, len)
  int batch = 0, units = 0, max_len = 0;
  int kernel = 1;    // odd
  int pool = 0;      // evict::PoolKind: 0 avg, 1 max
  bool count_include_pad = true;
};

// grid (ceil(max_len / kWindowPoolThreads), B * units).
MEMATTN_KERNEL void __launch_bounds__(kWindowPoolThreads) window_pool_kernel(const WindowPoolParams p) {
  const int unit = static_cast<int>(blockIdx.y);
  const int b = unit / p.units, u = unit % p.units;
  const int j = static_cast<int>(blockIdx.x) * kWindowPoolThreads + static_cast<int>(threadIdx.x);
  const int cnt = p.count[unit];
  const int n = cnt < 0 ? 0 : (cnt > p.max_len ? p.max_len : cnt);
  int len = n;
  if (p.lens) {
    const int l = p.lens[unit];
    len = l < n ? n : (l > p.max_len ? p.max_len : l);
  }
  if (j >= len) return;
  float* out = p.out + b * p.out_stride[0] + u * p.out_stride[1];
  if (j >= n) {
    out[j] = 0.f;
    return;
  }
  const int h = p.kernel / 2;
  const int a = j - h > 0 ? j - h : 0, e = j + h < n - 1 ? j + h : n - 1;
  float acc = 0.f;
  for (int r = 0; r < p.rows_per_unit; ++r) {
    const float* v = p.in + b * p.in_stride[0] + static_cast<std::int64_t>(u * p.rows_per_unit + r) * p.in_stride[1];
    float x;
    if (p.pool == static_cast<int>(evict::PoolKind::kMax)) {
      x = v[a];
      for (int y = a + 1; y <= e; ++y) x = x < v[y] ? v[y] : x;  // std::max(x, v[y])
    } else {
      float sum = 0.f;
      for (int y = a; y <= e; ++y) sum += v[y];
      x = sum / static_cast<float>(p.count_include_pad ? p.kernel : e - a + 1);
    }
    acc += x;
  }
  // CPU: one row -> the pooled value; several -> (0 + x_0 + x_1 + ...) * (1 / rows).
  out[j] = p.rows_per_unit == 1 ? acc : acc * (1.f / static_cast<float>(p.rows_per_unit));
}

// ---- WindowKV window scores ---------------------------------------------------------------------------

struct WindowKvParams {
  // Column sums of head h of sequence b at col + b*col_stride[0] + h*col_stride[1] (all heads
  // hold the same slots), averaged over `heads`.
  const float* col = nullptr;
  std::int64_t col_stride[2] = {};
  int heads = 0;
  const std::int32_t* n_rev = nullptr;  // [B] review slots [0, n_rev) (device; clamped to max_rev)
  float* out = nullptr;                 // out + b*out_stride + j, j < n_rev: rank-encoded scores
  std::int64_t out_stride = 0;
  int batch = 0, max_rev = 0;
  int block = 8;  // R
  int mode = 0;   // evict::WindowMode: 0 average, 1 max (top max(1, min(R/2, len)) per head)
};

struct WindowKvWork {
  float* tok = nullptr;     // [B][max_rev] head mean per slot
  float* wscore = nullptr;  // [B][windows] window scores
  int windows = 0;          // ceil(max_rev / R)
};

MEMATTN_DEVICE int windowkv_rev(const WindowKvParams& p, int b) {
  const int n = p.n_rev[b];
  return n < 0 ? 0 : (n > p.max_rev ? p.max_rev : n);
}

// grid (ceil(windows / kWindowKvThreads), B): one thread per window, fp64 sums in the CPU's order.
MEMATTN_KERNEL void __launch_bounds__(kWindowKvThreads) windowkv_stats_kernel(const WindowKvParams p, const WindowKvWork wk) {
  const int b = static_cast<int>(blockIdx.y);
  const int w = static_cast<int>(blockIdx.x) * kWindowKvThreads + static_cast<int>(threadIdx.x);
  const int n = windowkv_rev(p, b), R = p.block;
  if (w * static_cast<std::int64_t>(R) >= n) return;
  const int a = w * R, e = min(n, a + R), len = e - a;
  const float* col = p.col + b * p.col_stride[0];
  float* tok = wk.tok + static_cast<std::int64_t>(b) * p.max_rev;
  for (int j = a; j < e; ++j) {
    double s = 0;
    for (int h = 0; h < p.heads; ++h) s += col[h * p.col_stride[1] + j];
    tok[j] = static_cast<float>(s / static_cast<double>(p.heads));
  }
  double s = 0;
  std::int64_t cnt = 0;
  if (p.mode == 0) {
    for (int h = 0; h < p.heads; ++h)
      for (int j = a; j < e; ++j) s += col[h * p.col_stride[1] + j];
    cnt = static_cast<std::int64_t>(p.heads) * len;
  } else {
    const int kk = max(1, min(R / 2, len));
    for (int h = 0; h < p.heads; ++h) {
      const float* c = col + h * p.col_stride[1];
      // the kk largest in descending order (value desc, index asc): the CPU's partial_sort sum order
      float prev = INFINITY;
      int prev_j = -1;
      for (int t = 0; t < kk; ++t) {
        float best = 0.f;
        int best_j = -1;
        for (int j = a; j < e; ++j) {
          const float v = c[j];
          const bool after = v < prev || (v == prev && j > prev_j);
          if (after && (best_j < 0 || v > best)) best = v, best_j = j;
        }
        if (best_j < 0) break;  // NaN-only leftovers: the CPU's order is unspecified there
        s += best;
        prev = best, prev_j = best_j;
      }
    }
    cnt = static_cast<std::int64_t>(p.heads) * kk;
  }
  wk.wscore[static_cast<std::int64_t>(b) * wk.windows + w] = static_cast<float>(s / static_cast<double>(cnt));
}

// grid (ceil(windows / kWindowKvThreads), B): window rank by a sweep over all window scores (staged
// through shared memory), then the slots' ranks inside the window. Ranks are stable_sort's:
// rank(x) = #{y : v_y > v_x} + #{y < x : v_y == v_x}.
MEMATTN_KERNEL void __launch_bounds__(kWindowKvThreads) windowkv_rank_kernel(const WindowKvParams p, const WindowKvWork wk) {
  MEMATTN_SHARED(float, ws_s, [kWindowKvThreads]);
  const int b = static_cast<int>(blockIdx.y);
  const int w = static_cast<int>(blockIdx.x) * kWindowKvThreads + static_cast<int>(threadIdx.x);
  const int n = windowkv_rev(p, b), R = p.block;
  const int nw = static_cast<int>((static_cast<std::int64_t>(n) + R - 1) / R);
  if (static_cast<int>(blockIdx.x) * kWindowKvThreads >= nw) return;  // uniform per CTA
  const float* wsc = wk.wscore + static_cast<std::int64_t>(b) * wk.windows;
  const float mine = w < nw ? wsc[w] : 0.f;
  std::int64_t rank = 0;
  for (int w0 = 0; w0 < nw; w0 += kWindowKvThreads) {
    __syncthreads();
    const int y = w0 + static_cast<int>(threadIdx.x);
    ws_s[threadIdx.x] = y < nw ? wsc[y] : 0.f;
    __syncthreads();
    const int m = min(kWindowKvThreads, nw - w0);
    for (int x = 0; x < m; ++x) {
      const float v = ws_s[x];
      rank += (v > mine || (v == mine && w0 + x < w)) ? 1 : 0;
    }
  }
  if (w >= nw) return;
  const int a = w * R, e = min(n, a + R);
  const float* tok = wk.tok + static_cast<std::int64_t>(b) * p.max_rev;
  float* out = p.out + b * p.out_stride;
  for (int j = a; j < e; ++j) {
    const float tj = tok[j];
    std::int64_t r = 0;
    for (int x = a; x < e; ++x) r += (tok[x] > tj || (tok[x] == tj && x < j)) ? 1 : 0;
    out[j] = -static_cast<float>(rank * R + r);
  }
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
