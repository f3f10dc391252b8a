// EpiCache on the GPU (spec eviction.md §3.12; kernels: memattn/kernels/evict_episode.cuh; the
// host half apart from the launches: memattn/cuda/evict_episode_params.cuh):
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

#include <cstddef>

#include "memattn/core/status.hpp"
#include "memattn/cuda/evict_episode_params.cuh"
#include "memattn/cuda/runtime.cuh"
#include "memattn/cuda/stream_launch.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

// route[b] = the cosine-nearest of sequence b's count[b] centroids (ties: the lower index; -1
// without centroids; the CPU cache then routes to episode 0).
template <class T>
Status episode_route(const kernels::EpisodeRouteParams<T>& p, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(episode_route_can_implement(p));
  return episode_route_launch(p, stream_launch(stream));
}

// scores[s][j] for j < len[s] of every segment (three launches: LSE per key tile, LSE combine,
// scores). workspace: episode_score_workspace_size bytes, 16-byte aligned.
template <class TK, class TQ>
Status episode_score(const kernels::EpisodeScoreParams<TK, TQ>& p, void* workspace, std::size_t workspace_bytes,
                     cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(episode_score_can_implement(p));
  kernels::EpisodeScoreWork w;
  MEMATTN_RETURN_IF_ERROR(episode_detail::carve(p, workspace, workspace_bytes, &w));
  // The score kernel opted in before the first launch too: a device short of the shared memory
  // launches nothing.
  MEMATTN_RETURN_IF_ERROR(allow_dynamic_smem(kernels::episode_score_kernel<TK, TQ>, episode_detail::smem_bytes(p.head_dim)));
  return episode_detail::score_launches(p, w, stream_launch(stream));
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
