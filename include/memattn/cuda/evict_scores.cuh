// Fused token-eviction scores on the GPU (spec eviction.md §4.3): decode with
// DecodeArgs::scores set (the kernel writes the raw logits it computes), then
// evict_accumulate_scores() turns them into GQA-reduced probabilities p̄_j = R_g exp(s - lse) and
// updates the policy state of every key in place (H2O/A2SF accumulation or the Scissorhands
// history), in the same order and with the same rule as the CPU cache.
//
//   args.lse = ...; args.scores = scores_view;                 // [B, Hkv, Tq * G, Lcap]
//                                      // (or args.scores_half: fp16 logits, half the bytes)
//   cuda::dense_decode(args, ws, ws_bytes, stream);
//   kernels::EvictScoreParams p = cuda::evict_score_params(args, gamma, reduce);
//   p.acc = acc; p.state_stride[0] = ...; p.state_stride[1] = ...;
//   cuda::evict_accumulate_scores(p, kernels::EvictScoreMode::kAccumulate, stream);
//
// Stream-ordered, no allocation, no synchronisation. Bad arguments: a Status, nothing launched.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "memattn/attention/dense_args.hpp"
#include "memattn/core/status.hpp"
#include "memattn/cuda/evict_scores_params.cuh"
#include "memattn/cuda/runtime.cuh"
#include "memattn/cuda/stream_launch.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

inline Status evict_accumulate_scores(const kernels::EvictScoreParams& p, kernels::EvictScoreMode mode,
                                      cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(evict_accumulate_can_implement(p, mode));
  if (cudaPeekAtLastError() != cudaSuccess) return Status::kErrorCudaRuntime;
  return evict_score_launch(p, mode, stream_launch(stream));
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
