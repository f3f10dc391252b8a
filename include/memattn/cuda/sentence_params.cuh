// Host side of SentenceKV's sentence scoring apart from the launch (so also usable by tests/emu,
// the CPU emulator that runs the kernel in CI): the argument check and the launch (grid (sentence
// chunks, heads)) over a caller-given launcher launch(KernelRef<kernel>{}, grid, block, dynamic
// smem bytes, params). The CUDA wrapper: memattn/cuda/sentence.cuh.
#pragma once

#include <cuda_runtime.h>

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

template <class Launch>
Status sentence_score_launch(const kernels::SentenceScoreParams& p, Launch&& launch) {
  constexpr int T = kernels::kSentenceScoreThreads;
  const dim3 grid(static_cast<unsigned>((p.sentences + T - 1) / T), static_cast<unsigned>(p.heads));
  constexpr auto kernel = kernels::sentence_score_kernel<T>;  // a constexpr variable: see KernelRef
  return launch(KernelRef<kernel>{}, grid, dim3(T), 0, p);
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
