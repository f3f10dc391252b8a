// Host wrappers of the token-merging kernels (spec eviction.md §5.6; kernels in
// kernels/memattn/kernels/evict_merge.cuh, CPU twin cpu/evict_merge.hpp). Order per compaction:
//   KVMerger: evict_consecutive_sets -> evict_select (on the set scores) -> evict_gaussian_merge -> evict_gather
//   D2O:      evict_select -> evict_nearest_cos -> evict_gather
// Stream-ordered, no allocation, no synchronisation; workspaces (target/sim, pivot/own) are
// [segments][stride] arrays owned by the caller. Invalid segments (keep_count < 0) are skipped.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/core/status.hpp"
#include "memattn/cuda/runtime.cuh"
#include "memattn/kernels/evict_merge.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

template <class T>
Status evict_nearest_cos(const kernels::EvictNearestCosParams<T>& p, cudaStream_t stream) {
  if (p.k == nullptr || p.v == nullptr || p.len == nullptr || p.keep == nullptr || p.keep_count == nullptr ||
      p.tau == nullptr || p.has_tau == nullptr || p.target == nullptr || p.sim == nullptr)
    return Status::kErrorNullPointer;
  if (p.segments <= 0 || p.stride <= 0 || p.stride > (std::int64_t{1} << 31) - 1 || p.D <= 0)
    return Status::kErrorInvalidShape;
  if (!(p.alpha >= 0.f) || !(p.beta >= 0.f)) return Status::kErrorInvalidArgument;
  kernels::evict_nearest_cos_kernel<T><<<p.segments, kernels::kEvictMergeThreads, 0, stream>>>(p);
  return launch_status();
}

template <class T>
Status evict_consecutive_sets(const kernels::EvictConsecutiveSetsParams<T>& p, cudaStream_t stream) {
  if (p.k == nullptr || p.pos == nullptr || p.len == nullptr || p.t_cur == nullptr || p.scores == nullptr ||
      p.own == nullptr || p.pivot == nullptr)
    return Status::kErrorNullPointer;
  if (p.segments <= 0 || p.stride <= 0 || p.stride > (std::int64_t{1} << 31) - 1 || p.D <= 0)
    return Status::kErrorInvalidShape;
  if (!(p.theta >= -1.f && p.theta <= 1.f) || p.max_set < 1 || p.protect.n_sink < 0 || p.protect.n_recent < 0)
    return Status::kErrorInvalidArgument;
  kernels::evict_consecutive_sets_kernel<T><<<p.segments, kernels::kEvictMergeThreads, 0, stream>>>(p);
  return launch_status();
}

template <class T, class State>
Status evict_gaussian_merge(const kernels::EvictGaussianMergeParams<T, State>& p, cudaStream_t stream) {
  if (p.k == nullptr || p.v == nullptr || p.len == nullptr || p.keep == nullptr || p.keep_count == nullptr ||
      p.pivot == nullptr || p.own == nullptr)
    return Status::kErrorNullPointer;
  if (p.segments <= 0 || p.stride <= 0 || p.stride > (std::int64_t{1} << 31) - 1 || p.D <= 0 ||
      p.D > kernels::kEvictMergeMaxDim)
    return Status::kErrorInvalidShape;
  kernels::evict_gaussian_merge_kernel<T, State><<<p.segments, kernels::kEvictMergeThreads, 0, stream>>>(p);
  return launch_status();
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
