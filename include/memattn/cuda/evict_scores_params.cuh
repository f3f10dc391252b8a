// Host side of the fused eviction-score epilogue apart from the launch (so also usable by
// tests/emu, the CPU emulator that runs the kernels in CI): the parameters that follow from a
// decode call, the argument check, the four-keys-per-thread condition and the launch over a
// caller-given launcher. The CUDA wrapper: memattn/cuda/evict_scores.cuh.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <limits>

#include "memattn/attention/dense_args.hpp"
#include "memattn/core/status.hpp"
#include "memattn/kernels/evict_scores.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

// The epilogue parameters that follow from a decode call's arguments (scores, lse, lengths,
// shape, window); the caller adds the state pointer and its strides.
template <class T>
kernels::EvictScoreParams evict_score_params(const attention::DecodeArgs<T>& a, float gamma, int reduce) {
  kernels::EvictScoreParams p;
  p.scores = a.scores.data;
  p.scores_half = a.scores_half.data;
  p.lse = a.lse.data;
  for (int i = 0; i < 3; ++i) {
    p.scores_stride[i] = a.scores.data != nullptr ? a.scores.stride[i] : a.scores_half.stride[i];
    p.lse_stride[i] = a.lse.stride[i];
  }
  p.seq_lens = a.seq_lens;
  p.batch = static_cast<int>(a.q.shape[0]);
  p.q_tokens = static_cast<int>(a.q.shape[1]);
  p.kv_heads = static_cast<int>(a.k_cache.shape[1]);
  p.group = a.k_cache.shape[1] > 0 ? static_cast<int>(a.q.shape[2] / a.k_cache.shape[1]) : 0;
  p.kv_capacity = static_cast<int>(a.k_cache.shape[2]);
  p.window = a.window;
  p.gamma = gamma;
  p.reduce = reduce;
  return p;
}

inline Status evict_accumulate_can_implement(const kernels::EvictScoreParams& p, kernels::EvictScoreMode mode) {
  if ((p.scores == nullptr && p.scores_half == nullptr) || p.lse == nullptr) return Status::kErrorNullPointer;
  if (p.scores != nullptr && p.scores_half != nullptr) return Status::kErrorInvalidArgument;
  if (mode == kernels::EvictScoreMode::kAccumulate ? p.acc == nullptr : p.hist == nullptr) return Status::kErrorNullPointer;
  if (p.batch <= 0 || p.kv_heads <= 0 || p.group <= 0 || p.q_tokens <= 0 || p.kv_capacity <= 0 ||
      p.q_tokens > p.kv_capacity)
    return Status::kErrorInvalidShape;
  if (static_cast<std::int64_t>(p.batch) * p.kv_heads > std::numeric_limits<std::uint16_t>::max())
    return Status::kErrorInvalidShape;  // grid.y
  if (p.window < 0 || p.reduce < 0 || p.reduce > 2) return Status::kErrorInvalidArgument;
  if (mode == kernels::EvictScoreMode::kAccumulate && !(p.gamma >= 0.f && p.gamma <= 1.f))
    return Status::kErrorInvalidArgument;
  return Status::kSuccess;
}

// The four-keys-per-thread accumulate kernel (V = 4) needs rows that stay 16-byte aligned (8-byte for fp16
// logits) at every key multiple of 4.
inline bool evict_scores_vec4(const kernels::EvictScoreParams& p) {
  auto aligned = [](const void* ptr, std::uintptr_t a) { return reinterpret_cast<std::uintptr_t>(ptr) % a == 0; };
  const bool logits = p.scores_half != nullptr ? aligned(p.scores_half, 8) : aligned(p.scores, 16);
  return logits && aligned(p.acc, 16) && p.kv_capacity % 4 == 0 && p.scores_stride[0] % 4 == 0 &&
         p.scores_stride[1] % 4 == 0 && p.scores_stride[2] % 4 == 0 && p.state_stride[0] % 4 == 0 &&
         p.state_stride[1] % 4 == 0;
}

// The epilogue kernel a call runs, as a type: `kernel` is the __global__ function.
template <kernels::EvictScoreMode kMode, int V>
struct EvictScoreKernel {
  static constexpr auto kernel = kernels::evict_score_epilogue_kernel<kMode, V>;
};

// launch(kernel type, grid, block, dynamic smem bytes, params) for a checked call; returns the
// launch's Status (cuda/stream_launch.cuh; tests/emu passes the emulator's).
template <class Launch>
Status evict_score_launch(const kernels::EvictScoreParams& p, kernels::EvictScoreMode mode, Launch&& launch) {
  using kernels::EvictScoreMode;
  const bool vec = mode == EvictScoreMode::kAccumulate && evict_scores_vec4(p);
  const int keys_per_block = kernels::kEvictScoreThreads * (vec ? kernels::kEvictScoreVec : 1);
  const dim3 grid(static_cast<unsigned>((p.kv_capacity + keys_per_block - 1) / keys_per_block),
                  static_cast<unsigned>(p.batch * p.kv_heads));
  const dim3 block(kernels::kEvictScoreThreads);
  if (vec) return launch(EvictScoreKernel<EvictScoreMode::kAccumulate, kernels::kEvictScoreVec>{}, grid, block, 0, p);
  if (mode == EvictScoreMode::kAccumulate) return launch(EvictScoreKernel<EvictScoreMode::kAccumulate, 1>{}, grid, block, 0, p);
  return launch(EvictScoreKernel<EvictScoreMode::kHistory, 1>{}, grid, block, 0, p);
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
