// EpiCache's per-step device work (spec eviction.md §3.12); the CPU twins are
// evict::OnlineKMeans::nearest (evict/episode.hpp) and the probe scoring of
// cpu::EpiCacheKvCache::compress (cpu/epicache_kv_cache.hpp -> cpu::window_colsum).
//
// episode_route_kernel: one CTA per sequence, cosine similarity of the query embedding against
// the sequence's centroids in fp64 (§0.3.1: normalisation cancels), sim = dot / (|x| |c|), 0 when
// either norm is 0; the route is the first index of the largest non-NaN similarity (the CPU's
// strict `>` scan from -2), -1 without centroids. One warp per centroid.
//
// Probe scores (what the CPU cache computes, which is the reference's rule with two [lib]
// changes: the softmax spans the whole episode cache -- sinks and every chunk kept so far -- but
// not the probe's own keys, and probe rows are summed, not max-ed):
//   s_j = R_g sum_i softmax_j(tau q_{i,g} . k_j),  j < N, i < P probe rows, g < G heads of the group,
// R = mean | max | sum (evict::GroupReduce, default max). Two passes, no N x N matrix:
//   episode_lse_kernel      grid (key tiles, segments): per (tile, row) the partial (max, sum) over
//                           the tile's keys; thread = probe row, keys broadcast from shared memory.
//   episode_lse_combine_kernel  grid segments: lse per row over the tiles, in tile order.
//   episode_score_kernel    grid (key tiles, segments): thread = key, sum_i exp(s - lse) over the
//                           rows of each head in row order, then R over the heads in head order.
// fp32 math, K (and Q) converted once per tile into shared memory ([row][ld] fp32, ld/4 odd so
// 16-byte row accesses of consecutive threads hit distinct banks). Deterministic: no atomics on
// values, every sum in a fixed order.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "memattn/core/config.hpp"
#include "memattn/core/dtype.hpp"
#include "memattn/evict/policy.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

// ---- routing ----------------------------------------------------------------------------------

constexpr int kEpisodeRouteThreads = 256;

template <class T>  // float or double
struct EpisodeRouteParams {
  const T* query = nullptr;            // [batch][query_stride], dim used
  std::int64_t query_stride = 0;
  const T* centroids = nullptr;        // sequence b, centroid c at centroids + b*seq_stride + c*centroid_stride
  std::int64_t centroid_stride = 0;
  std::int64_t seq_stride = 0;
  const std::int32_t* count = nullptr;  // [batch] centroids of each sequence, <= max_centroids
  int batch = 0;
  int dim = 0;
  int max_centroids = 0;
  std::int32_t* route = nullptr;       // [batch] nearest centroid, -1 when there is none
  double* sim = nullptr;               // optional [batch]: its similarity (-2 when there is none)
  std::int32_t* error = nullptr;       // set to 1 for count outside [0, max_centroids] (nothing written)
};

namespace episode_detail {

MEMATTN_DEVICE double warp_sum(double x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// (sim, index) b beats a: larger sim, equal sim at a lower index; NaN never wins.
MEMATTN_DEVICE bool route_better(double bs, int bi, double as, int ai) {
  if (bi < 0 || bs != bs) return false;
  if (ai < 0) return true;
  return bs > as || (bs == as && bi < ai);
}

}  // namespace episode_detail

template <class T>
MEMATTN_KERNEL void __launch_bounds__(kEpisodeRouteThreads) episode_route_kernel(const EpisodeRouteParams<T> p) {
  constexpr int kWarps = kEpisodeRouteThreads / 32;
  MEMATTN_SHARED(double, s_red, [kWarps]);
  MEMATTN_SHARED(int, s_idx, [kWarps]);
  const int b = static_cast<int>(blockIdx.x);
  const int tid = static_cast<int>(threadIdx.x), warp = tid >> 5, lane = tid & 31;
  const int count = p.count[b];
  if (count < 0 || count > p.max_centroids) {
    if (tid == 0) atomicExch(p.error, 1);
    return;
  }
  const T* x = p.query + b * p.query_stride;
  double xx = 0.0;
  for (int d = tid; d < p.dim; d += kEpisodeRouteThreads) xx = fma(static_cast<double>(x[d]), static_cast<double>(x[d]), xx);
  xx = episode_detail::warp_sum(xx);
  if (lane == 0) s_red[warp] = xx;
  __syncthreads();
  double nx2 = 0.0;
  for (int w = 0; w < kWarps; ++w) nx2 += s_red[w];
  const double nx = sqrt(nx2);
  __syncthreads();  // s_red is reused below
  // Warp w scans centroids w, w + kWarps, ... in increasing order with the CPU's strict rule.
  double best = -2.0;
  int best_i = -1;
  for (int c = warp; c < count; c += kWarps) {
    const T* cr = p.centroids + b * p.seq_stride + c * p.centroid_stride;
    double dot = 0.0, cc = 0.0;
    for (int d = lane; d < p.dim; d += 32) {
      const double cv = static_cast<double>(cr[d]);
      dot = fma(static_cast<double>(x[d]), cv, dot);
      cc = fma(cv, cv, cc);
    }
    dot = episode_detail::warp_sum(dot);
    cc = episode_detail::warp_sum(cc);
    const double nc = sqrt(cc);
    const double s = nx > 0 && nc > 0 ? dot / (nx * nc) : 0.0;
    if (s > best) {
      best = s;
      best_i = c;
    }
  }
  if (lane == 0) {
    s_red[warp] = best;
    s_idx[warp] = best_i;
  }
  __syncthreads();
  if (tid != 0) return;
  double bs = -2.0;
  int bi = -1;
  for (int w = 0; w < kWarps; ++w)
    if (episode_detail::route_better(s_red[w], s_idx[w], bs, bi)) {
      bs = s_red[w];
      bi = s_idx[w];
    }
  p.route[b] = bi;
  if (p.sim != nullptr) p.sim[b] = bs;
}

// ---- probe scores -----------------------------------------------------------------------------

constexpr int kEpisodeScoreThreads = 64;  // = keys per tile = probe rows per chunk
constexpr int kEpisodeScoreMaxDim = 256;
// Register cap hint: 64-thread CTAs without one make ptxas aim at 32 CTAs per SM (32 registers)
// and spill; shared memory allows at most ~6 per SM at head_dim 64 anyway.
constexpr int kEpisodeScoreMinBlocks = 8;

template <class TK, class TQ>
struct EpisodeScoreParams {
  // Keys of segment s, row j: k + s*k_seg_stride + j*k_row_stride, head_dim contiguous.
  const TK* k = nullptr;
  std::int64_t k_seg_stride = 0;
  std::int64_t k_row_stride = 0;
  const std::int32_t* len = nullptr;  // [segments] N, <= max_tokens
  // Probe of segment s = (o, h) with o = s / kv_heads, h = s % kv_heads: row (i, g) at
  // q + o*q_seg_stride + i*q_tok_stride + (h*group + g)*q_head_stride, head_dim contiguous
  // (the CPU cache's probe [P][Hq][D]: q_tok_stride = Hq*D, q_head_stride = D).
  const TQ* q = nullptr;
  std::int64_t q_seg_stride = 0;
  std::int64_t q_tok_stride = 0;
  std::int64_t q_head_stride = 0;
  const std::int32_t* probe_count = nullptr;  // [segments / kv_heads] P, <= max_probe (0: scores 0)
  float* scores = nullptr;  // [segments][score_stride], j < N written
  std::int64_t score_stride = 0;
  int segments = 0;
  int kv_heads = 1;
  int group = 1;        // G = Hq / Hkv
  int head_dim = 0;
  int max_probe = 0;    // bound of probe_count (sizes the workspace)
  int max_tokens = 0;   // bound of len (sizes the workspace)
  float scale = 0.f;    // tau (the CPU cache: 1 / sqrt(head_dim))
  int reduce = 1;       // evict::GroupReduce: 0 mean, 1 max, 2 sum
  std::int32_t* error = nullptr;  // set to 1 for len or probe_count out of range (nothing written)
};

// Workspace views (carved by the host wrapper).
struct EpisodeScoreWork {
  float2* partial = nullptr;  // [segments][tiles][rows] (max, sum) per key tile
  float* lse = nullptr;       // [segments][rows]
  int tiles = 0;
  int rows = 0;               // group * max_probe; row of (i, g) = g * max_probe + i
  float inv_group = 1.f;      // 1 / group
};

namespace episode_detail {

// fp32 row stride of the shared tiles: head_dim padded to 4, then to an odd number of float4.
MEMATTN_HOST_DEVICE int tile_ld(int head_dim) {
  const int d4 = (head_dim + 3) / 4;
  return (d4 | 1) * 4;
}

template <class TK, class TQ>
MEMATTN_DEVICE bool segment_valid(const EpisodeScoreParams<TK, TQ>& p, int seg, int* n, int* pc) {
  *n = p.len[seg];
  *pc = p.probe_count[seg / p.kv_heads];
  return *n >= 0 && *n <= p.max_tokens && *pc >= 0 && *pc <= p.max_probe;
}

// Rows [r0, r0 + 64) of a [rows][head_dim] matrix (row r at base + r*row_stride) into shared fp32
// [64][ld] scaled by `mul`; rows >= limit and channels >= head_dim are zero.
template <class T>
MEMATTN_DEVICE void load_tile(float* dst, int ld, const T* base, std::int64_t row_stride, int r0, int limit,
                              int head_dim, float mul) {
  const int tid = static_cast<int>(threadIdx.x);
  for (int r = 0; r < kEpisodeScoreThreads; ++r) {
    float* row = dst + r * ld;
    if (r0 + r < limit) {
      const T* src = base + static_cast<std::int64_t>(r0 + r) * row_stride;
      for (int d = tid; d < ld; d += kEpisodeScoreThreads) row[d] = d < head_dim ? to_float(src[d]) * mul : 0.f;
    } else {
      for (int d = tid; d < ld; d += kEpisodeScoreThreads) row[d] = 0.f;
    }
  }
}

// Four dot products of a (own row, 16-byte aligned) with rows b0..b0+3 (broadcast).
MEMATTN_DEVICE void dot4(const float* a, const float* b0, int ld, int d4, float acc[4]) {
  const float4* a4 = reinterpret_cast<const float4*>(a);
#pragma unroll 1
  for (int d = 0; d < d4; ++d) {
    const float4 x = a4[d];
#pragma unroll
    for (int u = 0; u < 4; ++u) {
      const float4 y = reinterpret_cast<const float4*>(b0 + u * ld)[d];
      acc[u] = fmaf(x.x, y.x, acc[u]);
      acc[u] = fmaf(x.y, y.y, acc[u]);
      acc[u] = fmaf(x.z, y.z, acc[u]);
      acc[u] = fmaf(x.w, y.w, acc[u]);
    }
  }
}

}  // namespace episode_detail

// Pass 1. grid = (tiles, segments), block = kEpisodeScoreThreads, dynamic shared memory
// 2 * 64 * ld floats. Thread t owns probe row i0 + t of head g; keys of the tile broadcast.
template <class TK, class TQ>
MEMATTN_KERNEL void __launch_bounds__(kEpisodeScoreThreads, kEpisodeScoreMinBlocks)
    episode_lse_kernel(const EpisodeScoreParams<TK, TQ> p, const EpisodeScoreWork w) {
  MEMATTN_DYNAMIC_SMEM(float4, smem4);
  float* ks = reinterpret_cast<float*>(smem4);
  const int ld = episode_detail::tile_ld(p.head_dim), d4 = ld / 4;
  float* qs = ks + kEpisodeScoreThreads * ld;
  const int seg = static_cast<int>(blockIdx.y), tile = static_cast<int>(blockIdx.x), tid = static_cast<int>(threadIdx.x);
  int n = 0, pc = 0;
  if (!episode_detail::segment_valid(p, seg, &n, &pc)) {
    if (tile == 0 && tid == 0) atomicExch(p.error, 1);
    return;
  }
  const int j0 = tile * kEpisodeScoreThreads;
  if (pc == 0 || j0 >= n) return;
  const int nk = min(kEpisodeScoreThreads, n - j0);
  episode_detail::load_tile(ks, ld, p.k + seg * p.k_seg_stride, p.k_row_stride, j0, n, p.head_dim, 1.f);
  const int o = seg / p.kv_heads, h = seg % p.kv_heads;
  float2* part = w.partial + (static_cast<std::int64_t>(seg) * w.tiles + tile) * w.rows;
  for (int g = 0; g < p.group; ++g) {
    const TQ* qg = p.q + o * p.q_seg_stride + static_cast<std::int64_t>(h * p.group + g) * p.q_head_stride;
    for (int i0 = 0; i0 < pc; i0 += kEpisodeScoreThreads) {
      __syncthreads();  // the previous chunk's rows are no longer read
      episode_detail::load_tile(qs, ld, qg, p.q_tok_stride, i0, pc, p.head_dim, p.scale);
      __syncthreads();
      const int i = i0 + tid;
      float m = -INFINITY, l = 0.f;
      for (int c = 0; c < nk; c += 4) {
        float acc[4] = {0.f, 0.f, 0.f, 0.f};
        episode_detail::dot4(qs + tid * ld, ks + c * ld, ld, d4, acc);
        float mx = acc[0];
#pragma unroll
        for (int u = 1; u < 4; ++u)
          if (c + u < nk) mx = fmaxf(mx, acc[u]);
        if (mx > m) {
          l *= expf(m - mx);  // m = -inf: l = 0
          m = mx;
        }
#pragma unroll
        for (int u = 0; u < 4; ++u)
          if (c + u < nk) l += expf(acc[u] - m);
      }
      if (i < pc) part[g * p.max_probe + i] = make_float2(m, l);
    }
  }
}

// lse of every (i, g) row over the segment's tiles, in tile order. grid = segments.
template <class TK, class TQ>
MEMATTN_KERNEL void __launch_bounds__(128) episode_lse_combine_kernel(const EpisodeScoreParams<TK, TQ> p,
                                                                      const EpisodeScoreWork w) {
  const int seg = static_cast<int>(blockIdx.x);
  int n = 0, pc = 0;
  if (!episode_detail::segment_valid(p, seg, &n, &pc) || pc == 0 || n == 0) return;
  const int tiles = (n + kEpisodeScoreThreads - 1) / kEpisodeScoreThreads;
  const float2* part = w.partial + static_cast<std::int64_t>(seg) * w.tiles * w.rows;
  for (int x = static_cast<int>(threadIdx.x); x < p.group * pc; x += static_cast<int>(blockDim.x)) {
    const int r = (x / pc) * p.max_probe + x % pc;
    float m = -INFINITY;
    for (int t = 0; t < tiles; ++t) m = fmaxf(m, part[t * w.rows + r].x);
    float l = 0.f;
    for (int t = 0; t < tiles; ++t) {
      const float2 v = part[t * w.rows + r];
      l += v.y * expf(v.x - m);
    }
    w.lse[static_cast<std::int64_t>(seg) * w.rows + r] = m + logf(l);
  }
}

// Pass 2. grid = (tiles, segments), block = kEpisodeScoreThreads, dynamic shared memory
// (2 * 64 * ld + 64) floats. Thread t owns key j0 + t; probe rows broadcast, four at a time.
template <class TK, class TQ>
MEMATTN_KERNEL void __launch_bounds__(kEpisodeScoreThreads, kEpisodeScoreMinBlocks)
    episode_score_kernel(const EpisodeScoreParams<TK, TQ> p, const EpisodeScoreWork w) {
  MEMATTN_DYNAMIC_SMEM(float4, smem4);
  float* ks = reinterpret_cast<float*>(smem4);
  const int ld = episode_detail::tile_ld(p.head_dim), d4 = ld / 4;
  float* qs = ks + kEpisodeScoreThreads * ld;
  float* ls = qs + kEpisodeScoreThreads * ld;
  const int seg = static_cast<int>(blockIdx.y), tile = static_cast<int>(blockIdx.x), tid = static_cast<int>(threadIdx.x);
  int n = 0, pc = 0;
  if (!episode_detail::segment_valid(p, seg, &n, &pc)) return;
  const int j0 = tile * kEpisodeScoreThreads, j = j0 + tid;
  if (j0 >= n) return;
  float* out = p.scores + seg * p.score_stride;
  if (pc == 0) {  // the CPU scores every slot 0 without a probe
    if (j < n) out[j] = 0.f;
    return;
  }
  episode_detail::load_tile(ks, ld, p.k + seg * p.k_seg_stride, p.k_row_stride, j0, n, p.head_dim, 1.f);
  const int o = seg / p.kv_heads, h = seg % p.kv_heads;
  const float* lse = w.lse + static_cast<std::int64_t>(seg) * w.rows;
  const auto reduce = static_cast<evict::GroupReduce>(p.reduce);
  float gacc = 0.f;
  for (int g = 0; g < p.group; ++g) {
    const TQ* qg = p.q + o * p.q_seg_stride + static_cast<std::int64_t>(h * p.group + g) * p.q_head_stride;
    float col = 0.f;
    for (int i0 = 0; i0 < pc; i0 += kEpisodeScoreThreads) {
      __syncthreads();
      episode_detail::load_tile(qs, ld, qg, p.q_tok_stride, i0, pc, p.head_dim, p.scale);
      if (i0 + tid < pc) ls[tid] = lse[g * p.max_probe + i0 + tid];
      __syncthreads();
      const int rows = min(kEpisodeScoreThreads, pc - i0);
      for (int r = 0; r < rows; r += 4) {
        float acc[4] = {0.f, 0.f, 0.f, 0.f};
        episode_detail::dot4(ks + tid * ld, qs + r * ld, ld, d4, acc);
#pragma unroll
        for (int u = 0; u < 4; ++u)
          if (r + u < rows) col += expf(acc[u] - ls[r + u]);
      }
    }
    gacc = evict::group_combine(reduce, gacc, col, g);
  }
  // group_finish's mean as a product with the host's 1/G: an IEEE division here is a called
  // slow path whose register saves spill (the scores are not bit-exact to the CPU anyway).
  if (j < n) out[j] = reduce == evict::GroupReduce::kMean ? gacc * w.inv_group : gacc;
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
