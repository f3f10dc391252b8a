// Observation-window eviction scores on the GPU (spec eviction.md §4.1; kernels:
// memattn/kernels/evict_window.cuh; the host half apart from the launches:
// memattn/cuda/evict_window_params.cuh): the CUDA path of cpu::window_colsum + cpu::pool_scores
// (SnapKV, PyramidKV), WindowKV's window scores (§3.10) and CompressKV's head-subset scores (§3.11).
//
//   SnapKV / PyramidKV (per KV head):
//     kernels::WindowColsumParams<TQ, TK> p{...};             // queries, keys, positions, col out
//     std::size_t bytes; cuda::window_colsum_workspace_size(p, &bytes);
//     cuda::window_colsum(p, ws, bytes, stream);              // col[b][h][j] = R_g sum_i p_{g,i,j}
//     kernels::WindowPoolParams pp{...};  cuda::window_pool(pp, stream);   // pooled over [0, n_cand)
//   WindowKV (one index set per layer group): window_colsum of the group's first layer, then
//     cuda::windowkv_scores(kp, ws, bytes, stream);           // rank-encoded slot scores
//   CompressKV (one score vector per layer):
//     cuda::compresskv_scores(p, args, ws, bytes, stream);    // selected heads, pooled, averaged
//
// Queries: fp32, Half or BFloat16 (TQ); keys: the cache dtype (TK: Half, BFloat16 or fp32).
// Pass 1 (LSE) is skipped when p.lse is given (prefill's LSE, natural log, same tau and mask).
// Stream-ordered, no allocation, no synchronisation; scratch is two-phase (*_workspace_size, then
// the call with a kWorkspaceAlign-aligned buffer). With split_keys = 0 the pass-1 split count
// follows the device's SM count: ask the size on the device that runs the call.
//
// Contract: every argument is checked before anything is launched; on error nothing is written.
// kErrorNullPointer, kErrorInvalidShape (batch, window, max_keys < 1; window * heads per segment >
// 1024; more than 65535 segments), kErrorUnsupportedHeadDim (head_dim not a multiple of 8 in
// [8, 256]), kErrorGqaRatio (q_heads not a multiple of kv_heads; > 8 per KV head in GQA mode),
// kErrorInvalidStride (negative strides, rows shorter than head_dim, rows not 16-byte aligned),
// kErrorInvalidArgument (scale, reduce, kernel even or < 1, pool kind, heads out of range or
// repeated), kErrorWorkspaceTooSmall, kErrorNoDevice / kErrorCudaRuntime. The caller guarantees
// lens[] <= max_keys (larger values are clamped, keys beyond max_keys are never read) and, for
// CompressKV, n_cand <= the length of every selected head's segment.
// Matches the CPU within fp32 rounding of the logits (column sums: relative error ~1e-6, tests use
// 2e-4); pooling / WindowKV / CompressKV reductions are bit-identical given the same column sums.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "memattn/core/status.hpp"
#include "memattn/core/workspace.hpp"
#include "memattn/cuda/evict_window_params.cuh"
#include "memattn/cuda/runtime.cuh"
#include "memattn/cuda/stream_launch.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

namespace window_detail {

// The plan's SM count from the current device, when it needs one.
template <class TQ, class TK>
Status plan_sms(const kernels::WindowColsumParams<TQ, TK>& p, int split_keys, int* sms) {
  *sms = 0;
  return plan_needs_sms(p, split_keys) ? sm_count(sms) : Status::kSuccess;
}

}  // namespace window_detail

// ---- window column sums (§4.1) ----------------------------------------------------------------------

template <class TQ, class TK>
Status window_colsum_workspace_size(const kernels::WindowColsumParams<TQ, TK>& p, std::size_t* bytes,
                                    int split_keys = 0) {
  if (bytes == nullptr) return Status::kErrorNullPointer;
  MEMATTN_RETURN_IF_ERROR(window_colsum_can_implement(p));
  if (p.lse == nullptr && !device_available()) return Status::kErrorNoDevice;
  int sms = 0;
  MEMATTN_RETURN_IF_ERROR(window_detail::plan_sms(p, split_keys, &sms));
  Workspace ws;
  kernels::WindowPlan pl;
  MEMATTN_RETURN_IF_ERROR(window_detail::plan(p, kernels::WindowHeads{}, split_keys, sms, ws, &pl));
  *bytes = ws.required();
  return Status::kSuccess;
}

// col[b][h][j] for j < lens[b*Hkv + h]: the GQA-reduced window column sums (cpu::window_colsum).
template <class TQ, class TK>
Status window_colsum(const kernels::WindowColsumParams<TQ, TK>& p, void* workspace, std::size_t workspace_bytes,
                     cudaStream_t stream, int split_keys = 0) {
  MEMATTN_RETURN_IF_ERROR(window_colsum_can_implement(p));
  if (!device_available()) return Status::kErrorNoDevice;
  int sms = 0;
  MEMATTN_RETURN_IF_ERROR(window_detail::plan_sms(p, split_keys, &sms));
  Workspace ws(workspace, workspace_bytes);
  kernels::WindowPlan pl;
  MEMATTN_RETURN_IF_ERROR(window_detail::plan(p, kernels::WindowHeads{}, split_keys, sms, ws, &pl));
  MEMATTN_RETURN_IF_ERROR(ws.status());
  return window_detail::colsum_launches(p, pl, stream_launch(stream));
}

// ---- pooling -------------------------------------------------------------------------------------------

inline Status window_pool(const kernels::WindowPoolParams& p, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(window_pool_can_implement(p));
  if (!device_available()) return Status::kErrorNoDevice;
  return window_detail::pool_launch(p, stream_launch(stream));
}

// ---- WindowKV (§3.10) -------------------------------------------------------------------------------

inline Status windowkv_scores_workspace_size(const kernels::WindowKvParams& p, std::size_t* bytes) {
  if (bytes == nullptr) return Status::kErrorNullPointer;
  MEMATTN_RETURN_IF_ERROR(windowkv_scores_can_implement(p));
  Workspace ws;
  kernels::WindowKvWork wk;
  window_detail::plan_windowkv(p, ws, &wk);
  *bytes = ws.required();
  return Status::kSuccess;
}

// out[b][j], j < n_rev[b]: evict::WindowBlock::unit_scores of the heads' column sums.
inline Status windowkv_scores(const kernels::WindowKvParams& p, void* workspace, std::size_t workspace_bytes,
                              cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(windowkv_scores_can_implement(p));
  if (!device_available()) return Status::kErrorNoDevice;
  Workspace ws(workspace, workspace_bytes);
  kernels::WindowKvWork wk;
  window_detail::plan_windowkv(p, ws, &wk);
  MEMATTN_RETURN_IF_ERROR(ws.status());
  return window_detail::windowkv_launches(p, wk, stream_launch(stream));
}

// ---- CompressKV (§3.11) ------------------------------------------------------------------------------

template <class TQ, class TK>
Status compresskv_scores_workspace_size(const kernels::WindowColsumParams<TQ, TK>& p, const CompressKvScoreArgs& a,
                                        std::size_t* bytes, int split_keys = 0) {
  if (bytes == nullptr) return Status::kErrorNullPointer;
  MEMATTN_RETURN_IF_ERROR(compresskv_scores_can_implement(p, a));
  if (p.lse == nullptr && !device_available()) return Status::kErrorNoDevice;
  int sms = 0;
  MEMATTN_RETURN_IF_ERROR(window_detail::plan_sms(p, split_keys, &sms));
  Workspace ws;
  kernels::WindowPlan pl;
  kernels::WindowColsumParams<TQ, TK> q = p;
  MEMATTN_RETURN_IF_ERROR(window_detail::plan_compresskv(&q, a, split_keys, sms, ws, &pl));
  *bytes = ws.required();
  return Status::kSuccess;
}

// out[b][j] = (1/n) sum_s Pool_k(col_s)[j] for j < n_cand[b] (0 on [n_cand, lens[b]) when lens is
// given): cpu::head_subset_window_scores, each selected head alone against KV head hq / G.
template <class TQ, class TK>
Status compresskv_scores(const kernels::WindowColsumParams<TQ, TK>& p, const CompressKvScoreArgs& a, void* workspace,
                         std::size_t workspace_bytes, cudaStream_t stream, int split_keys = 0) {
  MEMATTN_RETURN_IF_ERROR(compresskv_scores_can_implement(p, a));
  if (!device_available()) return Status::kErrorNoDevice;
  int sms = 0;
  MEMATTN_RETURN_IF_ERROR(window_detail::plan_sms(p, split_keys, &sms));
  Workspace ws(workspace, workspace_bytes);
  kernels::WindowPlan pl;
  kernels::WindowColsumParams<TQ, TK> q = p;
  MEMATTN_RETURN_IF_ERROR(window_detail::plan_compresskv(&q, a, split_keys, sms, ws, &pl));
  MEMATTN_RETURN_IF_ERROR(ws.status());
  return window_detail::compresskv_launches(
      q, a, pl, [stream](float* col, std::size_t n) { return status_from(cudaMemsetAsync(col, 0, sizeof(float) * n, stream)); },
      stream_launch(stream));
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
