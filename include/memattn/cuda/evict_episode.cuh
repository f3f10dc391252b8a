// EpiCache on the GPU (spec eviction.md §3.12; kernels: memattn/kernels/evict_episode.cuh):
// nearest-centroid routing and the probe scores of an episode cache, then the shared selection
// and compaction of cuda/evict.cuh.
//
//   kernels::EpisodeRouteParams<double> r{...};  cuda::episode_route(r, stream);   // OnlineKMeans::nearest
//   kernels::EpisodeScoreParams<Half, Half> p{...};
//   std::size_t bytes;  cuda::episode_score_workspace_size(p, &bytes);            // from max_tokens, max_probe
//   cuda::episode_score(p, ws, bytes, stream);                                   // EpiCacheKvCache::compress's scores
//   then cuda::evict_select with protect = {sink, recent}, t_cur = the newest position, budget C_l,
//   tie = kPreferEarlier (the CPU uses kPreferLater for a segment whose probe is empty: all its
//   scores are 0 and it keeps the newest tokens; select those segments in a call of their own).
//
// The scores are those of the CPU cache: every probe row sees every key of the segment (the
// softmax spans the episode cache -- sinks and all kept chunks -- not the probe's own keys), the
// probe rows are summed and the group reduced with `reduce` (default max).
// Contract: host-checkable arguments are checked before any launch and nothing is launched on
// error: kErrorNullPointer, kErrorInvalidShape (counts, strides, grid limits),
// kErrorUnsupportedHeadDim (head_dim > 256), kErrorInvalidArgument (scale, reduce),
// kErrorWorkspaceTooSmall. Per-sequence / per-segment values only the device sees (centroid
// counts, segment lengths, probe counts out of their bounds) set *error = 1 and leave that
// sequence's / segment's outputs untouched. Non-finite keys or queries propagate (the CPU cache
// rejects them when they are stored). Stream-ordered, no allocation, no synchronisation.
// Accuracy vs cpu::window_colsum: fp32 logits in a different summation order; scores agree to
// ~1e-5 relative on unit-scale data (the tests use 2e-4 relative + 1e-6 absolute).
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

// route[b] = the cosine-nearest of sequence b's count[b] centroids (ties: the lower index; -1
// without centroids; the CPU cache then routes to episode 0).
template <class T>
Status episode_route(const kernels::EpisodeRouteParams<T>& p, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(episode_route_can_implement(p));
  kernels::episode_route_kernel<T><<<static_cast<unsigned>(p.batch), kernels::kEpisodeRouteThreads, 0, stream>>>(p);
  return launch_status();
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

// scores[s][j] for j < len[s] of every segment (three launches: LSE per key tile, LSE combine,
// scores). workspace: episode_score_workspace_size bytes, 16-byte aligned.
template <class TK, class TQ>
Status episode_score(const kernels::EpisodeScoreParams<TK, TQ>& p, void* workspace, std::size_t workspace_bytes,
                     cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(episode_score_can_implement(p));
  kernels::EpisodeScoreWork w = episode_detail::plan(p);
  if (workspace == nullptr) return Status::kErrorNullPointer;
  if (workspace_bytes < episode_detail::workspace_bytes(w, p.segments) ||
      reinterpret_cast<std::uintptr_t>(workspace) % 16 != 0)
    return Status::kErrorWorkspaceTooSmall;
  w.partial = static_cast<float2*>(workspace);
  w.lse = reinterpret_cast<float*>(static_cast<char*>(workspace) + episode_detail::align_up(episode_detail::partial_bytes(w, p.segments)));
  const int smem = episode_detail::smem_bytes(p.head_dim);
  MEMATTN_RETURN_IF_ERROR(allow_dynamic_smem(kernels::episode_lse_kernel<TK, TQ>, smem));
  MEMATTN_RETURN_IF_ERROR(allow_dynamic_smem(kernels::episode_score_kernel<TK, TQ>, smem));
  const dim3 grid(static_cast<unsigned>(w.tiles), static_cast<unsigned>(p.segments));
  kernels::episode_lse_kernel<TK, TQ><<<grid, kernels::kEpisodeScoreThreads, smem, stream>>>(p, w);
  MEMATTN_RETURN_IF_ERROR(launch_status());
  kernels::episode_lse_combine_kernel<TK, TQ><<<static_cast<unsigned>(p.segments), 128, 0, stream>>>(p, w);
  MEMATTN_RETURN_IF_ERROR(launch_status());
  kernels::episode_score_kernel<TK, TQ><<<grid, kernels::kEpisodeScoreThreads, smem, stream>>>(p, w);
  return launch_status();
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
