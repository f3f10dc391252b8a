// Host wrappers of the token-merging kernels (spec eviction.md §5.6; kernels in
// kernels/memattn/kernels/evict_merge.cuh, host half apart from the launches in
// cuda/evict_merge_params.cuh, CPU twin cpu/evict_merge.hpp). Order per compaction:
//   KVMerger: evict_consecutive_sets -> evict_select (on the set scores) -> evict_gaussian_merge -> evict_gather
//   D2O:      evict_select -> evict_nearest_cos -> evict_gather
// Stream-ordered, no allocation, no synchronisation; workspaces (target/sim, pivot/own) are
// [segments][stride] arrays owned by the caller. Invalid segments (keep_count < 0) are skipped.
#pragma once

#include <cuda_runtime.h>

#include "memattn/core/status.hpp"
#include "memattn/cuda/evict_merge_params.cuh"
#include "memattn/cuda/stream_launch.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

template <class T>
Status evict_nearest_cos(const kernels::EvictNearestCosParams<T>& p, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(evict_nearest_cos_can_implement(p));
  return evict_nearest_cos_launch(p, stream_launch(stream));
}

template <class T>
Status evict_consecutive_sets(const kernels::EvictConsecutiveSetsParams<T>& p, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(evict_consecutive_sets_can_implement(p));
  return evict_consecutive_sets_launch(p, stream_launch(stream));
}

template <class T, class State>
Status evict_gaussian_merge(const kernels::EvictGaussianMergeParams<T, State>& p, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(evict_gaussian_merge_can_implement(p));
  return evict_gaussian_merge_launch(p, stream_launch(stream));
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
