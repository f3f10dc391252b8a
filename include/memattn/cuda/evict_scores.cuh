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
#include "memattn/cuda/runtime.cuh"
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

inline Status evict_accumulate_scores(const kernels::EvictScoreParams& p, kernels::EvictScoreMode mode,
                                      cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(evict_accumulate_can_implement(p, mode));
  if (cudaPeekAtLastError() != cudaSuccess) return Status::kErrorCudaRuntime;
  const bool vec = mode == kernels::EvictScoreMode::kAccumulate && evict_scores_vec4(p);
  const int keys_per_block = kernels::kEvictScoreThreads * (vec ? kernels::kEvictScoreVec : 1);
  const dim3 grid(static_cast<unsigned>((p.kv_capacity + keys_per_block - 1) / keys_per_block),
                  static_cast<unsigned>(p.batch * p.kv_heads));
  if (vec) {
    kernels::evict_score_epilogue_kernel<kernels::EvictScoreMode::kAccumulate, kernels::kEvictScoreVec>
        <<<grid, kernels::kEvictScoreThreads, 0, stream>>>(p);
  } else if (mode == kernels::EvictScoreMode::kAccumulate) {
    kernels::evict_score_epilogue_kernel<kernels::EvictScoreMode::kAccumulate>
        <<<grid, kernels::kEvictScoreThreads, 0, stream>>>(p);
  } else {
    kernels::evict_score_epilogue_kernel<kernels::EvictScoreMode::kHistory>
        <<<grid, kernels::kEvictScoreThreads, 0, stream>>>(p);
  }
  return launch_status();
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
