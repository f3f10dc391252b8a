// SirLLM on the GPU (spec eviction.md §3.9, §4.5; kernels: memattn/kernels/evict_sirllm.cuh; the
// host half apart from the launches: memattn/cuda/evict_sirllm_params.cuh):
// the surprisal signal from a logits chunk and the per-chunk score update, then the shared
// selection and compaction of cuda/evict.cuh.
//
//   cuda::token_logprobs(logits, rows, vocab, stride, next, out, error, stream);   // cpu::token_logprobs
//   cuda::reference_alignment(logits, n, vocab, stride, ids, out, error, stream);  // cpu::reference_alignment
//   kernels::SirllmUpdateParams u{...};  cuda::sirllm_update(u, stream);           // Surprisal::on_chunk
//   kernels::EvictSelectParams s{};      // scores = u.state, pos = u.pos, len = u.size, stride = u.stride,
//   s.protect = {n_sink, n_recent};       // t_cur = first_pos + count - 1, budget = C, tie = the selector's
//   cuda::evict_select(s, stream);  cuda::evict_gather(...) for K, V, positions and the state.
// The selection needs nothing SirLLM-specific: the keep rule of the CPU cache (chunk appended
// first, then sinks (pos < n_sink) and recent (pos > t_cur - n_recent) protected and the rest by
// e, to exactly min(N, max(C, |protected|)) tokens) is evict_select's rule, with keep lists
// identical to cpu::select_keep. The state must share the positions' segment stride.
//
// Contract: host-checkable arguments are checked before the launch and nothing is launched on
// error (kErrorNullPointer, kErrorInvalidShape, kErrorInvalidArgument), as on the CPU. What only
// the device sees is reported on the device, never by a synchronisation: token_logprobs writes
// NaN for a row with a non-finite logit or an id outside [0, vocab) and or-s
// kernels::kLogprobNonFinite / kLogprobBadId into *error (the CPU returns kErrorNonFinite /
// kErrorInvalidArgument and writes nothing: treat the whole output as invalid when *error != 0).
// sirllm_update sets *error = 1 and leaves a segment untouched when its size, count or positions
// are inconsistent. The kernels never clear *error. Stream-ordered, no allocation, no
// synchronisation (CUDA-graph capturable).
// Accuracy of token_logprobs vs the CPU's fp64 accumulation: |gpu - cpu| <= 2e-5 + 1e-6 |cpu|
// (fp32 partial sums of ~vocab/512 terms per thread, combined in fp64). sirllm_update is
// bit-identical to the CPU (same fp32 operations; the decay factor is float(pow(double, double))).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/core/status.hpp"
#include "memattn/cuda/evict_sirllm_params.cuh"
#include "memattn/cuda/stream_launch.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

// out[i] = log p(next[i] | logits row i) for rows x vocab fp32 logits (row stride `stride`),
// all pointers device memory. rows == 0: nothing to do.
inline Status token_logprobs(const float* logits, std::int64_t rows, std::int64_t vocab, std::int64_t stride,
                             const std::int32_t* next, float* out, std::int32_t* error, cudaStream_t stream) {
  kernels::TokenLogprobParams p;
  std::int64_t outputs = 0;
  MEMATTN_RETURN_IF_ERROR(sirllm_detail::token_logprobs_params(logits, rows, vocab, stride, next, out, error, &p, &outputs));
  return sirllm_detail::logprobs_launch(p, outputs, stream_launch(stream));
}

// SirLLM reference alignment (RG-23) of n tokens with logits rows 0..n-1: out[0] = NaN,
// out[i] = log softmax(row i-1)[ids[i-1]]. Row n-1 is not read.
inline Status reference_alignment(const float* logits, std::int64_t n, std::int64_t vocab, std::int64_t stride,
                                  const std::int32_t* ids, float* out, std::int32_t* error, cudaStream_t stream) {
  kernels::TokenLogprobParams p;
  std::int64_t outputs = 0;
  MEMATTN_RETURN_IF_ERROR(sirllm_detail::reference_alignment_params(logits, n, vocab, stride, ids, out, error, &p, &outputs));
  return sirllm_detail::logprobs_launch(p, outputs, stream_launch(stream));
}

// Surprisal::on_chunk for every segment (one chunk of `count[b]` tokens per sequence b).
inline Status sirllm_update(const kernels::SirllmUpdateParams& p, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(sirllm_update_can_implement(p));
  return sirllm_update_launch(p, stream_launch(stream));
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
