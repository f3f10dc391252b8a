// Host side of EpiCache's device work apart from the launches (so also usable by tests/emu, the
// CPU emulator that runs the kernels in CI): the argument checks, the probe scores' workspace plan
// and carving, and the launches (routing; the scores' LSE per key tile, LSE combine, scores) over a
// caller-given launcher launch(KernelRef<kernel>{}, grid, block, dynamic smem bytes, args...). The
// CUDA wrappers and their contract: memattn/cuda/evict_episode.cuh.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "memattn/core/status.hpp"
#include "memattn/cuda/runtime.cuh"
#include "memattn/kernels/evict_episode.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

// ---- routing ----

template <class T>
Status episode_route_can_implement(const kernels::EpisodeRouteParams<T>& p) {
  static_assert(std::is_same<T, float>::value || std::is_same<T, double>::value, "float or double embeddings");
  if (p.query == nullptr || p.centroids == nullptr || p.count == nullptr || p.route == nullptr || p.error == nullptr)
    return Status::kErrorNullPointer;
  if (p.batch <= 0 || p.dim <= 0 || p.max_centroids < 0 || p.query_stride < p.dim ||
      (p.max_centroids > 1 && p.centroid_stride < p.dim) || p.seq_stride < 0 ||
      p.batch > std::numeric_limits<std::int32_t>::max())
    return Status::kErrorInvalidShape;
  return Status::kSuccess;
}

// One CTA per sequence.
template <class T, class Launch>
Status episode_route_launch(const kernels::EpisodeRouteParams<T>& p, Launch&& launch) {
  return launch(KernelRef<kernels::episode_route_kernel<T>>{}, dim3(static_cast<unsigned>(p.batch)),
                dim3(kernels::kEpisodeRouteThreads), 0, p);
}

// ---- probe scores ----

namespace episode_detail {

constexpr std::size_t kAlign = 256;
inline std::size_t align_up(std::size_t x) { return (x + kAlign - 1) / kAlign * kAlign; }

template <class TK, class TQ>
kernels::EpisodeScoreWork plan(const kernels::EpisodeScoreParams<TK, TQ>& p) {
  kernels::EpisodeScoreWork w;
  w.tiles = (p.max_tokens + kernels::kEpisodeScoreThreads - 1) / kernels::kEpisodeScoreThreads;
  w.rows = p.group * p.max_probe;
  w.inv_group = 1.f / static_cast<float>(p.group);
  return w;
}

inline std::size_t partial_bytes(const kernels::EpisodeScoreWork& w, int segments) {
  return static_cast<std::size_t>(segments) * static_cast<std::size_t>(w.tiles) * static_cast<std::size_t>(w.rows) *
         sizeof(float2);
}
inline std::size_t workspace_bytes(const kernels::EpisodeScoreWork& w, int segments) {
  return align_up(partial_bytes(w, segments)) +
         static_cast<std::size_t>(segments) * static_cast<std::size_t>(w.rows) * sizeof(float);
}

inline int smem_bytes(int head_dim) {
  return (2 * kernels::kEpisodeScoreThreads * kernels::episode_detail::tile_ld(head_dim) +
          kernels::kEpisodeScoreThreads) *
         static_cast<int>(sizeof(float));
}

// The plan with its partials and LSE carved from `workspace` (episode_score_workspace_size bytes,
// 16-byte aligned).
template <class TK, class TQ>
Status carve(const kernels::EpisodeScoreParams<TK, TQ>& p, void* workspace, std::size_t workspace_bytes,
             kernels::EpisodeScoreWork* out) {
  kernels::EpisodeScoreWork w = plan(p);
  if (workspace == nullptr) return Status::kErrorNullPointer;
  if (workspace_bytes < episode_detail::workspace_bytes(w, p.segments) || reinterpret_cast<std::uintptr_t>(workspace) % 16 != 0)
    return Status::kErrorWorkspaceTooSmall;
  w.partial = static_cast<float2*>(workspace);
  w.lse = reinterpret_cast<float*>(static_cast<char*>(workspace) + align_up(partial_bytes(w, p.segments)));
  *out = w;
  return Status::kSuccess;
}

// The probe scores' launches in order: LSE partials per key tile, their combine, the scores.
// launch(kernel, grid, block, smem, p, w).
template <class TK, class TQ, class Launch>
Status score_launches(const kernels::EpisodeScoreParams<TK, TQ>& p, const kernels::EpisodeScoreWork& w, Launch&& launch) {
  const int smem = smem_bytes(p.head_dim);
  const dim3 grid(static_cast<unsigned>(w.tiles), static_cast<unsigned>(p.segments));
  const dim3 block(kernels::kEpisodeScoreThreads);
  MEMATTN_RETURN_IF_ERROR(launch(KernelRef<kernels::episode_lse_kernel<TK, TQ>>{}, grid, block, smem, p, w));
  MEMATTN_RETURN_IF_ERROR(
      launch(KernelRef<kernels::episode_lse_combine_kernel<TK, TQ>>{}, dim3(static_cast<unsigned>(p.segments)), dim3(128), 0, p, w));
  return launch(KernelRef<kernels::episode_score_kernel<TK, TQ>>{}, grid, block, smem, p, w);
}

}  // namespace episode_detail

template <class TK, class TQ>
Status episode_score_can_implement(const kernels::EpisodeScoreParams<TK, TQ>& p) {
  if (p.k == nullptr || p.len == nullptr || p.q == nullptr || p.probe_count == nullptr || p.scores == nullptr ||
      p.error == nullptr)
    return Status::kErrorNullPointer;
  if (p.head_dim < 1 || p.head_dim > kernels::kEpisodeScoreMaxDim) return Status::kErrorUnsupportedHeadDim;
  if (p.segments <= 0 || p.kv_heads <= 0 || p.segments % p.kv_heads != 0 || p.group <= 0 || p.max_probe <= 0 ||
      p.max_tokens <= 0 || p.segments > 65535)
    return Status::kErrorInvalidShape;
  if (p.k_row_stride < p.head_dim || p.k_seg_stride < 0 || p.q_seg_stride < 0 || p.q_tok_stride < 0 ||
      p.q_head_stride < 0 || p.score_stride < p.max_tokens)
    return Status::kErrorInvalidShape;
  const kernels::EpisodeScoreWork w = episode_detail::plan(p);
  if (static_cast<std::int64_t>(p.group) * p.max_probe > std::numeric_limits<std::int32_t>::max() ||
      static_cast<std::int64_t>(w.tiles) * p.group * p.max_probe > std::numeric_limits<std::int32_t>::max())
    return Status::kErrorInvalidShape;  // in-kernel int row indices
  if (!(p.scale > 0.f) || !std::isfinite(p.scale) || p.reduce < 0 || p.reduce > 2) return Status::kErrorInvalidArgument;
  return Status::kSuccess;
}

template <class TK, class TQ>
Status episode_score_workspace_size(const kernels::EpisodeScoreParams<TK, TQ>& p, std::size_t* bytes) {
  if (bytes == nullptr) return Status::kErrorNullPointer;
  MEMATTN_RETURN_IF_ERROR(episode_score_can_implement(p));
  *bytes = episode_detail::workspace_bytes(episode_detail::plan(p), p.segments);
  return Status::kSuccess;
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
