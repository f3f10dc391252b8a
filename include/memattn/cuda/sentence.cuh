// Host wrapper of SentenceKV's sentence scoring kernel (kernels/sentence_score.cuh): argument
// checks, launch, Status. Stream-ordered, no allocation, no synchronisation.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/core/status.hpp"
#include "memattn/cuda/runtime.cuh"
#include "memattn/kernels/sentence_score.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

inline Status sentence_score_can_implement(const kernels::SentenceScoreParams& p) {
  if (p.ksum == nullptr || p.count == nullptr || p.qbar == nullptr || p.score == nullptr) return Status::kErrorNullPointer;
  if (p.heads <= 0 || p.sentences <= 0 || p.head_dim <= 0 || p.heads > 65535) return Status::kErrorInvalidShape;
  return Status::kSuccess;
}

inline Status sentence_score(const kernels::SentenceScoreParams& p, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(sentence_score_can_implement(p));
  constexpr int T = kernels::kSentenceScoreThreads;
  const dim3 grid(static_cast<unsigned>((p.sentences + T - 1) / T), static_cast<unsigned>(p.heads));
  kernels::sentence_score_kernel<T><<<grid, T, 0, stream>>>(p);
  return launch_status();
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
