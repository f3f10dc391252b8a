// Host wrapper of SentenceKV's sentence scoring kernel (kernels/sentence_score.cuh; host half apart
// from the launch: cuda/sentence_params.cuh): argument checks, launch, Status. Stream-ordered, no
// allocation, no synchronisation.
#pragma once

#include <cuda_runtime.h>

#include "memattn/core/status.hpp"
#include "memattn/cuda/sentence_params.cuh"
#include "memattn/cuda/stream_launch.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

inline Status sentence_score(const kernels::SentenceScoreParams& p, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(sentence_score_can_implement(p));
  return sentence_score_launch(p, stream_launch(stream));
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
