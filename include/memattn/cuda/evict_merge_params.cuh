// Host side of the token-merging kernels apart from the launches (so also usable by tests/emu, the
// CPU emulator that runs the kernels in CI): the argument checks and each kernel's launch (one CTA
// of kernels::kEvictMergeThreads per segment) over a caller-given launcher
// launch(KernelRef<kernel>{}, grid, block, dynamic smem bytes, params). The CUDA wrappers and
// their contract: memattn/cuda/evict_merge.cuh.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/core/status.hpp"
#include "memattn/cuda/runtime.cuh"
#include "memattn/kernels/evict_merge.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

namespace merge_detail {
inline bool bad_shape(int segments, std::int64_t stride, int D) {
  return segments <= 0 || stride <= 0 || stride > (std::int64_t{1} << 31) - 1 || D <= 0;
}
}  // namespace merge_detail

template <class T>
Status evict_nearest_cos_can_implement(const kernels::EvictNearestCosParams<T>& p) {
  if (p.k == nullptr || p.v == nullptr || p.len == nullptr || p.keep == nullptr || p.keep_count == nullptr ||
      p.tau == nullptr || p.has_tau == nullptr || p.target == nullptr || p.sim == nullptr)
    return Status::kErrorNullPointer;
  if (merge_detail::bad_shape(p.segments, p.stride, p.D)) return Status::kErrorInvalidShape;
  if (!(p.alpha >= 0.f) || !(p.beta >= 0.f)) return Status::kErrorInvalidArgument;
  return Status::kSuccess;
}

template <class T>
Status evict_consecutive_sets_can_implement(const kernels::EvictConsecutiveSetsParams<T>& p) {
  if (p.k == nullptr || p.pos == nullptr || p.len == nullptr || p.t_cur == nullptr || p.scores == nullptr ||
      p.own == nullptr || p.pivot == nullptr)
    return Status::kErrorNullPointer;
  if (merge_detail::bad_shape(p.segments, p.stride, p.D)) return Status::kErrorInvalidShape;
  if (!(p.theta >= -1.f && p.theta <= 1.f) || p.max_set < 1 || p.protect.n_sink < 0 || p.protect.n_recent < 0)
    return Status::kErrorInvalidArgument;
  return Status::kSuccess;
}

template <class T, class State>
Status evict_gaussian_merge_can_implement(const kernels::EvictGaussianMergeParams<T, State>& p) {
  if (p.k == nullptr || p.v == nullptr || p.len == nullptr || p.keep == nullptr || p.keep_count == nullptr ||
      p.pivot == nullptr || p.own == nullptr)
    return Status::kErrorNullPointer;
  if (merge_detail::bad_shape(p.segments, p.stride, p.D) || p.D > kernels::kEvictMergeMaxDim) return Status::kErrorInvalidShape;
  return Status::kSuccess;
}

namespace merge_detail {
// launch(kernel, grid, block, smem, p) of a checked call: one CTA per segment.
template <class Kernel, class Params, class Launch>
Status launch_segments(Kernel kernel, const Params& p, Launch&& launch) {
  return launch(kernel, dim3(static_cast<unsigned>(p.segments)), dim3(kernels::kEvictMergeThreads), 0, p);
}
}  // namespace merge_detail

template <class T, class Launch>
Status evict_nearest_cos_launch(const kernels::EvictNearestCosParams<T>& p, Launch&& launch) {
  return merge_detail::launch_segments(KernelRef<kernels::evict_nearest_cos_kernel<T>>{}, p, launch);
}

template <class T, class Launch>
Status evict_consecutive_sets_launch(const kernels::EvictConsecutiveSetsParams<T>& p, Launch&& launch) {
  return merge_detail::launch_segments(KernelRef<kernels::evict_consecutive_sets_kernel<T>>{}, p, launch);
}

template <class T, class State, class Launch>
Status evict_gaussian_merge_launch(const kernels::EvictGaussianMergeParams<T, State>& p, Launch&& launch) {
  return merge_detail::launch_segments(KernelRef<kernels::evict_gaussian_merge_kernel<T, State>>{}, p, launch);
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
