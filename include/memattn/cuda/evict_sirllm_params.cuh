// Host side of SirLLM's device work apart from the launches (so also usable by tests/emu, the CPU
// emulator that runs the kernels in CI): the argument checks and kernel parameters of
// token_logprobs / reference_alignment, the check of sirllm_update, and the launches (the 16-byte
// load variant where the rows allow it) over a caller-given launcher
// launch(KernelRef<kernel>{}, grid, block, dynamic smem bytes, params). The CUDA wrappers and their
// contract: memattn/cuda/evict_sirllm.cuh.
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

inline bool grid_fits(std::int64_t n) { return n <= std::numeric_limits<std::int32_t>::max(); }

// token_logprobs' checked parameters and its number of output rows (0: nothing to launch).
inline Status token_logprobs_params(const float* logits, std::int64_t rows, std::int64_t vocab, std::int64_t stride,
                                    const std::int32_t* next, float* out, std::int32_t* error, kernels::TokenLogprobParams* p,
                                    std::int64_t* outputs) {
  *outputs = 0;
  if (rows == 0) return Status::kSuccess;
  if (logits == nullptr || next == nullptr || out == nullptr || error == nullptr) return Status::kErrorNullPointer;
  if (rows < 0 || vocab <= 0 || stride < vocab || !grid_fits(rows)) return Status::kErrorInvalidShape;
  p->logits = logits;
  p->next = next;
  p->out = out;
  p->vocab = vocab;
  p->stride = stride;
  p->error = error;
  *outputs = rows;
  return Status::kSuccess;
}

// reference_alignment's checked parameters and its number of outputs (0: nothing to launch).
inline Status reference_alignment_params(const float* logits, std::int64_t n, std::int64_t vocab, std::int64_t stride,
                                         const std::int32_t* ids, float* out, std::int32_t* error,
                                         kernels::TokenLogprobParams* p, std::int64_t* outputs) {
  *outputs = 0;
  if (n == 0) return Status::kSuccess;
  if (out == nullptr || error == nullptr) return Status::kErrorNullPointer;
  if (n < 0 || !grid_fits(n)) return Status::kErrorInvalidShape;
  if (n > 1) {  // as the CPU: only n > 1 reads logits and ids
    if (logits == nullptr || ids == nullptr) return Status::kErrorNullPointer;
    if (vocab <= 0 || stride < vocab) return Status::kErrorInvalidShape;
    p->logits = logits;
    p->next = ids;
    p->vocab = vocab;
    p->stride = stride;
  }
  p->out = out;
  p->error = error;
  p->shift = 1;
  *outputs = n;
  return Status::kSuccess;
}

// One CTA per output row; 16-byte loads need 16-byte row starts (n == 1 of the reference alignment
// reads no logits).
template <class Launch>
Status logprobs_launch(const kernels::TokenLogprobParams& p, std::int64_t outputs, Launch&& launch) {
  if (outputs == 0) return Status::kSuccess;
  const bool vec4 = p.logits != nullptr && p.stride % 4 == 0 && reinterpret_cast<std::uintptr_t>(p.logits) % 16 == 0;
  const dim3 grid(static_cast<unsigned>(outputs)), block(kernels::kTokenLogprobThreads);
  constexpr auto vec4_kernel = kernels::token_logprob_kernel<true>;  // constexpr variables: see KernelRef
  constexpr auto scalar_kernel = kernels::token_logprob_kernel<false>;
  if (vec4) return launch(KernelRef<vec4_kernel>{}, grid, block, 0, p);
  return launch(KernelRef<scalar_kernel>{}, grid, block, 0, p);
}

}  // namespace sirllm_detail

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

// One CTA per segment.
template <class Launch>
Status sirllm_update_launch(const kernels::SirllmUpdateParams& p, Launch&& launch) {
  return launch(KernelRef<kernels::sirllm_update_kernel>{}, dim3(static_cast<unsigned>(p.segments)),
                dim3(kernels::kSirllmUpdateThreads), 0, p);
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
