// Host side of LazyEviction's per-step kernels apart from the launches (so also usable by
// tests/emu, the CPU emulator that runs the kernels in CI): the argument check and the launch of
// the update or the score kernel (grid (slot chunks, segments)) over a caller-given launcher
// launch(KernelRef<kernel>{}, grid, block, dynamic smem bytes, params). The CUDA wrappers and
// their contract: memattn/cuda/evict_recurrence.cuh.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "memattn/core/status.hpp"
#include "memattn/cuda/runtime.cuh"
#include "memattn/kernels/evict_recurrence.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

inline Status recurrence_can_implement(const kernels::RecurrenceParams& p, bool update) {
  if (p.state == nullptr || p.len == nullptr || p.t == nullptr || (update ? p.pbar == nullptr : p.scores == nullptr))
    return Status::kErrorNullPointer;
  if (p.segments <= 0 || p.stride <= 0 || p.stride > (std::int64_t{1} << 31) - 1 || p.segments > 65535)
    return Status::kErrorInvalidShape;
  if (!(p.alpha >= 0.f && p.alpha <= 1.f)) return Status::kErrorInvalidArgument;
  return Status::kSuccess;
}

inline dim3 recurrence_grid(const kernels::RecurrenceParams& p) {
  return dim3(static_cast<unsigned>(std::min<std::int64_t>((p.stride + kernels::kRecurrenceThreads - 1) / kernels::kRecurrenceThreads, 64)), static_cast<unsigned>(p.segments));
}

// launch(...) of a checked call: the update kernel (update) or the score kernel.
template <class Launch>
Status recurrence_launch(const kernels::RecurrenceParams& p, bool update, Launch&& launch) {
  constexpr int kT = kernels::kRecurrenceThreads;
  constexpr auto update_kernel = kernels::recurrence_update_kernel<kT>;  // constexpr variables: see KernelRef
  constexpr auto score_kernel = kernels::recurrence_score_kernel<kT>;
  if (update) return launch(KernelRef<update_kernel>{}, recurrence_grid(p), dim3(kT), 0, p);
  return launch(KernelRef<score_kernel>{}, recurrence_grid(p), dim3(kT), 0, p);
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
