// Host wrappers of LazyEviction's per-step kernels (kernels/evict_recurrence.cuh; host half apart
// from the launches: cuda/evict_recurrence_params.cuh):
//   recurrence_update(p, stream)  state[seg][j] <- hit test of p̄[seg][j] at t[seg] (j < len[seg])
//   recurrence_scores(p, stream)  scores[seg][j] = min(mri - (t[seg] - last_hit), 0) (raw: unclamped) (+ acc tie)
// then cuda::evict_select (optionally with retention priorities) and evict_gather compact.
// Stream-ordered, no allocation, no synchronisation.
#pragma once

#include <cuda_runtime.h>

#include "memattn/core/status.hpp"
#include "memattn/cuda/evict_recurrence_params.cuh"
#include "memattn/cuda/stream_launch.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

inline Status recurrence_update(const kernels::RecurrenceParams& p, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(recurrence_can_implement(p, true));
  return recurrence_launch(p, true, stream_launch(stream));
}

inline Status recurrence_scores(const kernels::RecurrenceParams& p, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(recurrence_can_implement(p, false));
  return recurrence_launch(p, false, stream_launch(stream));
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
