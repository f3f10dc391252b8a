// Host wrappers of LazyEviction's per-step kernels (kernels/evict_recurrence.cuh):
//   recurrence_update(p, stream)  state[seg][j] <- hit test of p̄[seg][j] at t[seg] (j < len[seg])
//   recurrence_scores(p, stream)  scores[seg][j] = min(mri - (t[seg] - last_hit), 0) (raw: unclamped) (+ acc tie)
// then cuda::evict_select (optionally with retention priorities) and evict_gather compact.
// Stream-ordered, no allocation, no synchronisation.
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

inline Status recurrence_update(const kernels::RecurrenceParams& p, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(recurrence_can_implement(p, true));
  kernels::recurrence_update_kernel<kernels::kRecurrenceThreads>
      <<<recurrence_grid(p), kernels::kRecurrenceThreads, 0, stream>>>(p);
  return launch_status();
}

inline Status recurrence_scores(const kernels::RecurrenceParams& p, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(recurrence_can_implement(p, false));
  kernels::recurrence_score_kernel<kernels::kRecurrenceThreads>
      <<<recurrence_grid(p), kernels::kRecurrenceThreads, 0, stream>>>(p);
  return launch_status();
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
