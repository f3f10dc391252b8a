// SirLLM on the GPU (spec eviction.md §3.9, §4.5; kernels: memattn/kernels/evict_sirllm.cuh):
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
#include <limits>

#include "memattn/core/status.hpp"
#include "memattn/cuda/runtime.cuh"
#include "memattn/evict/sirllm.hpp"
#include "memattn/kernels/evict_sirllm.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

namespace sirllm_detail {

inline Status launch_logprobs(const kernels::TokenLogprobParams& p, std::int64_t outputs, cudaStream_t stream) {
  // 16-byte loads need 16-byte row starts; n == 1 of the reference alignment reads no logits.
  const bool vec4 = p.logits != nullptr && p.stride % 4 == 0 && reinterpret_cast<std::uintptr_t>(p.logits) % 16 == 0;
  const unsigned grid = static_cast<unsigned>(outputs);
  if (vec4) {
    kernels::token_logprob_kernel<true><<<grid, kernels::kTokenLogprobThreads, 0, stream>>>(p);
  } else {
    kernels::token_logprob_kernel<false><<<grid, kernels::kTokenLogprobThreads, 0, stream>>>(p);
  }
  return launch_status();
}

inline bool grid_fits(std::int64_t n) { return n <= std::numeric_limits<std::int32_t>::max(); }

}  // namespace sirllm_detail

// out[i] = log p(next[i] | logits row i) for rows x vocab fp32 logits (row stride `stride`),
// all pointers device memory. rows == 0: nothing to do.
inline Status token_logprobs(const float* logits, std::int64_t rows, std::int64_t vocab, std::int64_t stride,
                             const std::int32_t* next, float* out, std::int32_t* error, cudaStream_t stream) {
  if (rows == 0) return Status::kSuccess;
  if (logits == nullptr || next == nullptr || out == nullptr || error == nullptr) return Status::kErrorNullPointer;
  if (rows < 0 || vocab <= 0 || stride < vocab || !sirllm_detail::grid_fits(rows)) return Status::kErrorInvalidShape;
  kernels::TokenLogprobParams p;
  p.logits = logits;
  p.next = next;
  p.out = out;
  p.vocab = vocab;
  p.stride = stride;
  p.error = error;
  return sirllm_detail::launch_logprobs(p, rows, stream);
}

// SirLLM reference alignment (RG-23) of n tokens with logits rows 0..n-1: out[0] = NaN,
// out[i] = log softmax(row i-1)[ids[i-1]]. Row n-1 is not read.
inline Status reference_alignment(const float* logits, std::int64_t n, std::int64_t vocab, std::int64_t stride,
                                  const std::int32_t* ids, float* out, std::int32_t* error, cudaStream_t stream) {
  if (n == 0) return Status::kSuccess;
  if (out == nullptr || error == nullptr) return Status::kErrorNullPointer;
  if (n < 0 || !sirllm_detail::grid_fits(n)) return Status::kErrorInvalidShape;
  kernels::TokenLogprobParams p;
  if (n > 1) {  // as the CPU: only n > 1 reads logits and ids
    if (logits == nullptr || ids == nullptr) return Status::kErrorNullPointer;
    if (vocab <= 0 || stride < vocab) return Status::kErrorInvalidShape;
    p.logits = logits;
    p.next = ids;
    p.vocab = vocab;
    p.stride = stride;
  }
  p.out = out;
  p.error = error;
  p.shift = 1;
  return sirllm_detail::launch_logprobs(p, n, stream);
}

inline Status sirllm_update_can_implement(const kernels::SirllmUpdateParams& p) {
  if (p.state == nullptr || p.pos == nullptr || p.size == nullptr || p.logprobs == nullptr || p.count == nullptr ||
      p.first_pos == nullptr || p.error == nullptr)
    return Status::kErrorNullPointer;
  if (p.segments <= 0 || p.stride <= 0 || p.logprob_stride <= 0 || p.segments_per_sequence <= 0 ||
      p.segments % p.segments_per_sequence != 0)
    return Status::kErrorInvalidShape;
  evict::Surprisal::Params sp;
  sp.decay = p.decay;
  sp.turn = p.turn;
  return evict::Surprisal::check(sp);  // decay in [0, 1], turn >= 0
}

// Surprisal::on_chunk for every segment (one chunk of `count[b]` tokens per sequence b).
inline Status sirllm_update(const kernels::SirllmUpdateParams& p, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(sirllm_update_can_implement(p));
  kernels::sirllm_update_kernel<<<static_cast<unsigned>(p.segments), kernels::kSirllmUpdateThreads, 0, stream>>>(p);
  return launch_status();
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
