// Lane-group ThinK decode (the fast path of cuda::think_decode for 16-byte aligned fp16 layouts):
// the same attention as think_decode_kernel -- one query token per (sequence, KV head) segment
// over [old: d_keep kept key channels | new: full-width keys], one softmax, tau of the full d, raw
// logits and LSE for the eviction epilogue -- computed the way the dense decode computes it
// (dense_decode.cuh, within 3-14% of cuDNN on the H100), instead of CUDA-core tiles staged as fp32:
//   * D / 8 lanes share a key, each lane owns 8 consecutive slots (one 16-byte piece of K and of V);
//     an old row's slots are its kept channels (row stride a multiple of 8 halves), so the lanes
//     past ceil(d_keep / 8) hold zeros and their q slots are 0, and lane l's q registers hold
//     tau * log2(e) * q[ch[8l + i]] over old rows, q[8l + i] over new rows (reloaded once, when a
//     split crosses from the old to the new region);
//   * a multi-stage cp.async pipeline per thread (no barrier), lazy rescaling, base-2 softmax: the
//     dense decode's detail::decode_chunk, which also writes the raw logits (natural log) when
//     asked;
//   * a chunk never crosses the old/new boundary: a split's old part and new part are chunked
//     separately (the chunk index alone says which region and which keys).
// With one split the CTA writes o and lse; with several it writes the (m, l, acc) partials of
// think_combine_kernel (m in natural log, acc and l relative to it), which merges them.
// Not here (the tile kernel does them): the KIVI region, the value extension (v_channels),
// unaligned rows, head_dim other than 64 / 128 / 256.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/kernels/dense_decode.cuh"
#include "memattn/kernels/think_decode.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace kernels {

namespace think_lanes {

// Chunk c of a split: its region (old or new), its first key and the region-part's end, all in
// segment token indices. The split's old part is [o0, o1), its new part [n0, n1).
struct SplitParts {
  int o0, o1, n0, n1, old_chunks, chunks;
  MEMATTN_DEVICE void chunk(int c, int kChunk, bool* old, int* base, int* end) const {
    *old = c < old_chunks;
    *base = *old ? o0 + c * kChunk : n0 + (c - old_chunks) * kChunk;
    *end = *old ? o1 : n1;
  }
};

// Copies chunk [base, base + kChunk) (keys at or past `end` clamped to end - 1, masked later) of
// one lane group into a pipeline stage: K and V pieces of the lane, at slot (u, 0 / 1) as
// decode_chunk reads them. Old K pieces past the kept channels are zeros (plain shared store: the
// thread itself reads the slot, after the pipeline's wait).
template <int D, int R>
MEMATTN_DEVICE void issue(uint4* stage, const Half* krow0, const Half* vrow0, long long ks, long long vs, int region_lo,
                          int base, int end, bool k_piece, int group, int tid) {
  using Cfg = DenseDecodeConfig<D, R>;
#pragma unroll
  for (int u = 0; u < Cfg::kUnroll; ++u) {
    int j = base + group * Cfg::kUnroll + u;
    j = (j < end ? j : end - 1) - region_lo;
    if (k_piece) {
      detail::cp_async_16(stage + (u * 2 + 0) * Cfg::kThreads + tid, krow0 + static_cast<long long>(j) * ks);
    } else {
      stage[(u * 2 + 0) * Cfg::kThreads + tid] = make_uint4(0u, 0u, 0u, 0u);
    }
    detail::cp_async_16(stage + (u * 2 + 1) * Cfg::kThreads + tid, vrow0 + static_cast<long long>(j) * vs);
  }
}

}  // namespace think_lanes

// grid (segments = B * Hkv, splits), block kDecodeThreads; R: query heads per KV head rounded up
// to a power of two (the rows of the tile).
template <int D, int R>
MEMATTN_KERNEL void __launch_bounds__(kDecodeThreads, (DenseDecodeConfig<D, R>::kMinBlocksPerSm))
think_decode_lanes_kernel(const ThinKDecodeParams p, const ThinKSplit sp) {
  using Cfg = DenseDecodeConfig<D, R>;
  constexpr int kLanes = Cfg::kLanes;
  constexpr int kChunk = Cfg::kChunk;
  constexpr int kStages = Cfg::kStages;
  constexpr int kStageVecs = Cfg::kUnroll * 2 * kDecodeThreads;

  __shared__ __align__(16) unsigned char smem[Cfg::kSmemBytes];
  uint4* pipe = reinterpret_cast<uint4*>(smem);

  const int tid = static_cast<int>(threadIdx.x);
  const int group = tid / kLanes;
  const int lane = tid % kLanes;  // owns slots [lane * 8, lane * 8 + 8)
  const long long s = blockIdx.x;
  const int split = static_cast<int>(blockIdx.y);
  const int b = static_cast<int>(s / p.kv_heads), h = static_cast<int>(s % p.kv_heads);
  const int G = p.q_heads / p.kv_heads, dk = p.d_keep;
  const int n_old = p.n_old[s], total = n_old + p.n_new[s];
  const int t_lo = sp.split_keys > 0 ? min(total, split * sp.split_keys) : 0;
  const int t_hi = sp.split_keys > 0 ? min(total, t_lo + sp.split_keys) : total;
  think_lanes::SplitParts parts;
  parts.o0 = min(t_lo, n_old);
  parts.o1 = min(t_hi, n_old);
  parts.n0 = max(t_lo, n_old);
  parts.n1 = max(t_hi, n_old);
  parts.old_chunks = (parts.o1 - parts.o0 + kChunk - 1) / kChunk;
  parts.chunks = parts.old_chunks + (parts.n1 - parts.n0 + kChunk - 1) / kChunk;

  const Half* k_old = p.k_old + s * p.old_seg_stride + lane * 8;
  const Half* k_new = p.k_new + s * p.new_seg_stride + lane * 8;
  const bool split_v = p.v_old != nullptr;
  // old values: v_old rows (apart) or v's first n_old rows; new values follow in v
  const Half* v_old = (split_v ? p.v_old + s * p.v_old_seg_stride : p.v + s * p.v_seg_stride) + lane * 8;
  const long long v_old_rs = split_v ? p.old_v_row_stride : p.head_dim;
  const Half* v_new = p.v + s * p.v_seg_stride + (split_v ? 0 : static_cast<long long>(n_old) * D) + lane * 8;
  const bool old_k_piece = lane * 8 < dk;

  auto issue = [&](int c) {
    bool old;
    int base, end;
    parts.chunk(c, kChunk, &old, &base, &end);
    uint4* stage = pipe + (c % kStages) * kStageVecs;
    if (old) {
      think_lanes::issue<D, R>(stage, k_old, v_old, p.old_row_stride, v_old_rs, 0, base, end, old_k_piece, group, tid);
    } else {
      think_lanes::issue<D, R>(stage, k_new, v_new, D, D, n_old, base, end, true, group, tid);
    }
  };
#pragma unroll
  for (int c = 0; c < kStages - 1; ++c) {
    if (c < parts.chunks) issue(c);
    detail::cp_async_commit();
  }

  // q of the region being read, in the base-2 domain: gathered kept channels (old) or all (new).
  constexpr float kLog2e = 1.4426950408889634f;
  const float qscale = p.scale * kLog2e;
  const float* qg = p.q + (static_cast<long long>(b) * p.q_heads + h * G) * D;
  const std::uint8_t* chl = p.channels + s * dk;
  float q[R][8];
  auto load_q = [&](bool old) {
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int slot = lane * 8 + i;
        float x = 0.f;
        if (r < G && (!old || slot < dk)) x = qg[r * D + (old ? chl[slot] : slot)] * qscale;
        q[r][i] = x;
      }
  };
  bool q_old = parts.old_chunks > 0;
  load_q(q_old);

  float m[R], l[R], acc[R][8];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[r][i] = 0.f;
  }
  // Rows = the G query heads (padding rows R > G are masked); every key is visible (decode).
  const detail::RowBounds rb{total - 1, 0, G, G, 0};
  float* const srow = p.scores != nullptr ? p.scores + s * p.scores_seg_stride : nullptr;

  for (int c = 0; c < parts.chunks; ++c) {
    const int next = c + kStages - 1;
    if (next < parts.chunks) issue(next);
    detail::cp_async_commit();
    detail::cp_async_wait<kStages - 1>();
    bool old;
    int base, end;
    parts.chunk(c, kChunk, &old, &base, &end);
    if (old != q_old) {  // the split crossed into the new region (once)
      q_old = old;
      load_q(old);
    }
    const uint4* stage = pipe + (c % kStages) * kStageVecs;
    if (base + kChunk <= end) {  // every key of the chunk exists (padding rows R > G are never written)
      detail::decode_chunk<Half, D, R, false>(stage, tid, base, group, end, rb, q, m, l, acc, srow, p.scores_row_stride);
    } else {
      detail::decode_chunk<Half, D, R, true>(stage, tid, base, group, end, rb, q, m, l, acc, srow, p.scores_row_stride);
    }
  }
  detail::cp_async_wait<0>();
  __syncthreads();  // the epilogue reuses the pipeline's shared memory

  // Merge the lane groups' streams (fixed order: deterministic), as the dense decode does.
  detail::stash_group_state<D, R>(smem, group, lane, m, l, acc);
  __syncthreads();
  constexpr float kLn2 = 0.6931471805599453f;
  const long long slot = static_cast<long long>(split) * gridDim.x + s;  // split partials (think_combine_kernel)
  for (int item = tid; item < R * kLanes; item += kDecodeThreads) {
    const int r = item / kLanes, cp = item % kLanes;
    if (r >= G) continue;
    float o[8], mx, lsum;
    detail::merge_group_states<D, R>(smem, r, cp, o, &mx, &lsum);
    if (sp.splits == 1) {
      const float inv = lsum > 0.f ? 1.f / lsum : 0.f;
      float* op = p.o + (static_cast<long long>(b) * p.q_heads + h * G + r) * D + cp * 8;
#pragma unroll
      for (int i = 0; i < 8; ++i) op[i] = o[i] * inv;
      if (p.lse != nullptr && cp == 0)
        p.lse[static_cast<long long>(b) * p.q_heads + h * G + r] = lsum > 0.f ? (mx + log2f(lsum)) * kLn2 : -INFINITY;
    } else {
      float* ap = sp.acc + (slot * G + r) * D + cp * 8;
#pragma unroll
      for (int i = 0; i < 8; ++i) ap[i] = o[i];
      if (cp == 0) {
        sp.ml[(slot * G + r) * 2] = mx * kLn2;  // -inf for an empty split: ignored by the combine
        sp.ml[(slot * G + r) * 2 + 1] = lsum;
      }
    }
  }
}

}  // namespace kernels
MEMATTN_NAMESPACE_END
