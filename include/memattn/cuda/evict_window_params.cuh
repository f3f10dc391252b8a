// Host side of the observation-window eviction scores apart from the launches (so also usable by
// tests/emu, the CPU emulator that runs the kernels in CI): the argument checks, the pass-1 split
// plan and workspace carving (the SM count is the caller's), CompressKV's head subset, per-head
// buffers and pooling parameters, and the launch sequences over a caller-given launcher
// launch(KernelRef<kernel>{}, grid, block, dynamic smem bytes, args...). The CUDA wrappers and
// their contract: memattn/cuda/evict_window.cuh.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "memattn/core/status.hpp"
#include "memattn/core/workspace.hpp"
#include "memattn/cuda/runtime.cuh"
#include "memattn/kernels/evict_window.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

// CompressKV's layer score (§3.11) on top of WindowColsumParams (whose col, col_stride and reduce
// are not used: the per-head column sums live in the workspace).
struct CompressKvScoreArgs {
  const std::int32_t* heads = nullptr;  // host [n_heads]: selected query heads, distinct, < q_heads
  int n_heads = 0;                      // 1 .. kernels::kWindowMaxSelHeads
  int kernel = 5;                       // odd
  int pool = 0;                         // evict::PoolKind: 0 avg, 1 max
  bool count_include_pad = true;
  const std::int32_t* n_cand = nullptr;  // device [B]: pooled region [0, n_cand) (slots before the window)
  const std::int32_t* lens = nullptr;    // device [B], optional: out = 0 on [n_cand, len)
  float* out = nullptr;                  // out + b*out_stride + j
  std::int64_t out_stride = 0;
};

namespace window_detail {

inline bool aligned16(const void* ptr) { return reinterpret_cast<std::uintptr_t>(ptr) % 16 == 0; }

template <class T>
bool rows16(const T* base, const std::int64_t* strides, int n) {
  if (!aligned16(base)) return false;
  for (int i = 0; i < n; ++i)
    if ((strides[i] * static_cast<std::int64_t>(sizeof(T))) % 16 != 0) return false;
  return true;
}

template <class TQ, class TK>
Status check(const kernels::WindowColsumParams<TQ, TK>& p, const kernels::WindowHeads& heads, bool need_col) {
  if (p.q == nullptr || p.qpos == nullptr || p.k == nullptr || p.kpos == nullptr || (need_col && p.col == nullptr))
    return Status::kErrorNullPointer;
  if (p.batch < 1 || p.window < 1 || p.max_keys < 1) return Status::kErrorInvalidShape;
  if (p.head_dim < 8 || p.head_dim > kernels::kWindowMaxDim || p.head_dim % 8 != 0) return Status::kErrorUnsupportedHeadDim;
  if (p.kv_heads < 1 || p.q_heads < p.kv_heads || p.q_heads % p.kv_heads != 0) return Status::kErrorGqaRatio;
  const int G = p.q_heads / p.kv_heads;
  if (heads.count == 0 && G > kernels::kWindowMaxGroup) return Status::kErrorGqaRatio;
  const int gc = heads.count > 0 ? 1 : G;
  const int units = heads.count > 0 ? heads.count : p.kv_heads;
  if (static_cast<std::int64_t>(p.window) * gc > kernels::kWindowMaxRows) return Status::kErrorInvalidShape;
  if (static_cast<std::int64_t>(p.batch) * units > 65535) return Status::kErrorInvalidShape;  // grid.y
  for (int i = 0; i < 3; ++i)
    if (p.q_stride[i] < 0 || p.k_stride[i] < 0 || p.lse_stride[i] < 0) return Status::kErrorInvalidStride;
  if (p.qpos_stride < 0 || p.kpos_stride[0] < 0 || p.kpos_stride[1] < 0 || p.col_stride[0] < 0 || p.col_stride[1] < 0)
    return Status::kErrorInvalidStride;
  if ((p.q_heads > 1 && p.q_stride[2] < p.head_dim) || p.k_stride[2] < p.head_dim) return Status::kErrorInvalidStride;
  if (!rows16(p.q, p.q_stride, 3) || !rows16(p.k, p.k_stride, 3)) return Status::kErrorInvalidStride;
  if (!(p.scale > 0.f) || !std::isfinite(p.scale) || p.reduce < 0 || p.reduce > 2) return Status::kErrorInvalidArgument;
  return Status::kSuccess;
}

inline Status heads_from(const CompressKvScoreArgs& a, int q_heads, kernels::WindowHeads* out) {
  if (a.heads == nullptr) return Status::kErrorNullPointer;
  if (a.n_heads < 1 || a.n_heads > kernels::kWindowMaxSelHeads) return Status::kErrorInvalidArgument;
  kernels::WindowHeads h;
  h.count = a.n_heads;
  for (int s = 0; s < a.n_heads; ++s) {
    if (a.heads[s] < 0 || a.heads[s] >= q_heads) return Status::kErrorInvalidArgument;
    for (int t = 0; t < s; ++t)
      if (a.heads[t] == a.heads[s]) return Status::kErrorInvalidArgument;  // two units would write one LSE row
    h.q_head[s] = a.heads[s];
  }
  *out = h;
  return Status::kSuccess;
}

// Whether plan() needs the device's SM count: pass 1 runs (no LSE given) with automatic splits.
template <class TQ, class TK>
bool plan_needs_sms(const kernels::WindowColsumParams<TQ, TK>& p, int split_keys) {
  return p.lse == nullptr && split_keys == 0;
}

// Splits of pass 1 (split-K when segments < 2 * sms, >= 4 tiles each; `sms` is read only when
// plan_needs_sms), the LSE buffer (unless given) and the (m, l) partials, carved from `ws` (sizing
// or carving mode).
template <class TQ, class TK>
Status plan(const kernels::WindowColsumParams<TQ, TK>& p, const kernels::WindowHeads& heads, int split_keys, int sms,
            Workspace& ws, kernels::WindowPlan* pl) {
  if (split_keys < 0) return Status::kErrorInvalidArgument;
  pl->heads = heads;
  pl->group = p.q_heads / p.kv_heads;
  pl->units = heads.count > 0 ? heads.count : p.kv_heads;
  const int gc = heads.count > 0 ? 1 : pl->group;
  const std::int64_t segments = static_cast<std::int64_t>(p.batch) * pl->units;
  const std::int64_t rows = static_cast<std::int64_t>(p.window) * gc;
  if (p.lse != nullptr) {
    pl->lse_in = p.lse;
    for (int i = 0; i < 3; ++i) pl->lse_stride[i] = p.lse_stride[i];
    pl->splits = 0;  // no pass 1
    return Status::kSuccess;
  }
  const std::int64_t tiles = (static_cast<std::int64_t>(p.max_keys) + kernels::kWindowTile - 1) / kernels::kWindowTile;
  std::int64_t tps;
  if (split_keys > 0) {
    tps = (split_keys + kernels::kWindowTile - 1) / kernels::kWindowTile;
  } else {
    const std::int64_t want = std::max<std::int64_t>(1, (2LL * sms + segments - 1) / segments);
    tps = std::max<std::int64_t>(4, (tiles + want - 1) / want);
  }
  tps = std::min(tps, tiles);
  const std::int64_t splits = (tiles + tps - 1) / tps;
  if (splits > 65535) return Status::kErrorInvalidArgument;
  pl->splits = static_cast<int>(splits);
  pl->tiles_per_split = static_cast<int>(tps);
  const std::size_t lse_n = static_cast<std::size_t>(p.batch) * p.window * p.q_heads;
  pl->lse_out = ws.take<float>(lse_n);
  pl->lse_in = pl->lse_out;
  pl->lse_stride[0] = static_cast<std::int64_t>(p.window) * p.q_heads;
  pl->lse_stride[1] = p.q_heads;
  pl->lse_stride[2] = 1;
  if (splits > 1) pl->partial = ws.take<float2>(static_cast<std::size_t>(segments * splits * rows));
  return Status::kSuccess;
}

// The column sums' launches in order: pass 1 unless the LSE is given, the combine of its partials
// when it has several splits, pass 2. launch(kernel, grid, block, smem, p, pl).
template <class TQ, class TK, class Launch>
Status colsum_launches(const kernels::WindowColsumParams<TQ, TK>& p, const kernels::WindowPlan& pl, Launch&& launch) {
  const kernels::WindowSmem geo(p.head_dim);
  const unsigned segments = static_cast<unsigned>(p.batch) * static_cast<unsigned>(pl.units);
  const dim3 block(kernels::kWindowThreads);
  if (pl.splits > 0) {
    MEMATTN_RETURN_IF_ERROR(launch(KernelRef<kernels::window_lse_kernel<TQ, TK>>{},
                                   dim3(static_cast<unsigned>(pl.splits), segments), block, geo.lse_bytes(), p, pl));
    if (pl.splits > 1)
      MEMATTN_RETURN_IF_ERROR(launch(KernelRef<kernels::window_lse_combine_kernel<TQ, TK>>{}, dim3(segments), block, 0, p, pl));
  }
  const unsigned tiles = static_cast<unsigned>((p.max_keys + kernels::kWindowTile - 1) / kernels::kWindowTile);
  return launch(KernelRef<kernels::window_colsum_kernel<TQ, TK>>{}, dim3(tiles, segments), block, geo.colsum_bytes(), p, pl);
}

}  // namespace window_detail

// ---- window column sums (§4.1) ----------------------------------------------------------------------

template <class TQ, class TK>
Status window_colsum_can_implement(const kernels::WindowColsumParams<TQ, TK>& p) {
  return window_detail::check(p, kernels::WindowHeads{}, true);
}

// ---- pooling -------------------------------------------------------------------------------------------

inline Status window_pool_can_implement(const kernels::WindowPoolParams& p) {
  if (p.in == nullptr || p.out == nullptr || p.count == nullptr) return Status::kErrorNullPointer;
  if (p.batch < 1 || p.units < 1 || p.max_len < 1 || p.rows_per_unit < 1) return Status::kErrorInvalidShape;
  if (static_cast<std::int64_t>(p.batch) * p.units > 65535) return Status::kErrorInvalidShape;
  if (p.in_stride[0] < 0 || p.in_stride[1] < 0 || p.out_stride[0] < 0 || p.out_stride[1] < 0)
    return Status::kErrorInvalidStride;
  if (p.kernel < 1 || p.kernel % 2 == 0 || p.pool < 0 || p.pool > 1) return Status::kErrorInvalidArgument;
  if (static_cast<const void*>(p.in) == static_cast<const void*>(p.out)) return Status::kErrorInvalidArgument;  // reads neighbours
  return Status::kSuccess;
}

namespace window_detail {
// launch(kernel, grid, block, smem, p) of a checked pooling call.
template <class Launch>
Status pool_launch(const kernels::WindowPoolParams& p, Launch&& launch) {
  const dim3 grid(static_cast<unsigned>((p.max_len + kernels::kWindowPoolThreads - 1) / kernels::kWindowPoolThreads),
                  static_cast<unsigned>(p.batch * p.units));
  return launch(KernelRef<kernels::window_pool_kernel>{}, grid, dim3(kernels::kWindowPoolThreads), 0, p);
}
}  // namespace window_detail

// ---- WindowKV (§3.10) -------------------------------------------------------------------------------

inline Status windowkv_scores_can_implement(const kernels::WindowKvParams& p) {
  if (p.col == nullptr || p.n_rev == nullptr || p.out == nullptr) return Status::kErrorNullPointer;
  if (p.batch < 1 || p.heads < 1 || p.max_rev < 1) return Status::kErrorInvalidShape;
  if (p.batch > 65535) return Status::kErrorInvalidShape;
  if (p.col_stride[0] < 0 || p.col_stride[1] < 0 || p.out_stride < 0) return Status::kErrorInvalidStride;
  if (p.block < 1 || p.mode < 0 || p.mode > 1) return Status::kErrorInvalidArgument;
  return Status::kSuccess;
}

namespace window_detail {
inline void plan_windowkv(const kernels::WindowKvParams& p, Workspace& ws, kernels::WindowKvWork* wk) {
  wk->windows = static_cast<int>((static_cast<std::int64_t>(p.max_rev) + p.block - 1) / p.block);
  wk->tok = ws.take<float>(static_cast<std::size_t>(p.batch) * p.max_rev);
  wk->wscore = ws.take<float>(static_cast<std::size_t>(p.batch) * wk->windows);
}

// WindowKV's launches in order (per-window statistics, then ranks): launch(kernel, grid, block, smem, p, wk).
template <class Launch>
Status windowkv_launches(const kernels::WindowKvParams& p, const kernels::WindowKvWork& wk, Launch&& launch) {
  const dim3 grid(static_cast<unsigned>((wk.windows + kernels::kWindowKvThreads - 1) / kernels::kWindowKvThreads),
                  static_cast<unsigned>(p.batch));
  const dim3 block(kernels::kWindowKvThreads);
  MEMATTN_RETURN_IF_ERROR(launch(KernelRef<kernels::windowkv_stats_kernel>{}, grid, block, 0, p, wk));
  return launch(KernelRef<kernels::windowkv_rank_kernel>{}, grid, block, 0, p, wk);
}
}  // namespace window_detail

// ---- CompressKV (§3.11) ------------------------------------------------------------------------------

template <class TQ, class TK>
Status compresskv_scores_can_implement(const kernels::WindowColsumParams<TQ, TK>& p, const CompressKvScoreArgs& a) {
  kernels::WindowHeads heads;
  MEMATTN_RETURN_IF_ERROR(window_detail::heads_from(a, std::max(p.q_heads, 0), &heads));
  if (a.n_cand == nullptr || a.out == nullptr) return Status::kErrorNullPointer;
  MEMATTN_RETURN_IF_ERROR(window_detail::check(p, heads, false));
  if (a.out_stride < 0) return Status::kErrorInvalidStride;
  if (a.kernel < 1 || a.kernel % 2 == 0 || a.pool < 0 || a.pool > 1) return Status::kErrorInvalidArgument;
  return Status::kSuccess;
}

namespace window_detail {
// Per-head column sums [B][n_heads][max_keys] after the pass-1 buffers.
template <class TQ, class TK>
Status plan_compresskv(kernels::WindowColsumParams<TQ, TK>* p, const CompressKvScoreArgs& a, int split_keys, int sms,
                       Workspace& ws, kernels::WindowPlan* pl) {
  kernels::WindowHeads heads;
  MEMATTN_RETURN_IF_ERROR(heads_from(a, p->q_heads, &heads));
  MEMATTN_RETURN_IF_ERROR(plan(*p, heads, split_keys, sms, ws, pl));
  p->col = ws.take<float>(static_cast<std::size_t>(p->batch) * a.n_heads * p->max_keys);
  p->col_stride[0] = static_cast<std::int64_t>(a.n_heads) * p->max_keys;
  p->col_stride[1] = p->max_keys;
  return Status::kSuccess;
}

// The pooling of the per-head column sums q.col (planned by plan_compresskv): their mean, pooled.
template <class TQ, class TK>
kernels::WindowPoolParams compresskv_pool_params(const kernels::WindowColsumParams<TQ, TK>& q, const CompressKvScoreArgs& a) {
  kernels::WindowPoolParams pp;
  pp.in = q.col;
  pp.in_stride[0] = q.col_stride[0];
  pp.in_stride[1] = q.col_stride[1];
  pp.rows_per_unit = a.n_heads;
  pp.out = a.out;
  pp.out_stride[0] = a.out_stride;
  pp.out_stride[1] = 0;
  pp.count = a.n_cand;
  pp.lens = a.lens;
  pp.batch = q.batch;
  pp.units = 1;
  pp.max_len = q.max_keys;
  pp.kernel = a.kernel;
  pp.pool = a.pool;
  pp.count_include_pad = a.count_include_pad;
  return pp;
}

// CompressKV's steps in order: clear(q.col, floats) zeroes the per-head sums (slots a head's
// segment does not hold read as 0 in the pooling, never as stale scratch), the column sums of the
// selected heads, the pooling of their mean. launch as colsum_launches / pool_launch.
template <class TQ, class TK, class Clear, class Launch>
Status compresskv_launches(const kernels::WindowColsumParams<TQ, TK>& q, const CompressKvScoreArgs& a,
                           const kernels::WindowPlan& pl, Clear&& clear, Launch&& launch) {
  MEMATTN_RETURN_IF_ERROR(clear(q.col, static_cast<std::size_t>(q.batch) * a.n_heads * q.max_keys));
  MEMATTN_RETURN_IF_ERROR(colsum_launches(q, pl, launch));
  const kernels::WindowPoolParams pp = compresskv_pool_params(q, a);
  MEMATTN_RETURN_IF_ERROR(window_pool_can_implement(pp));
  return pool_launch(pp, launch);
}
}  // namespace window_detail

}  // namespace cuda
MEMATTN_NAMESPACE_END
