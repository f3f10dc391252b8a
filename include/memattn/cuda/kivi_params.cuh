// Host side of the KIVI GPU append and decode apart from the launches (so also usable by
// tests/emu, the CPU emulator that runs the kernels in CI): the view and argument checks and the
// decode's kernel parameters. The CUDA wrappers and their contract: memattn/cuda/kivi.cuh.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "memattn/core/status.hpp"
#include "memattn/kernels/kivi_append.cuh"
#include "memattn/kernels/kivi_decode.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

inline Status kivi_check_view(const kernels::KiviCacheView& c) {
  MEMATTN_RETURN_IF_ERROR(c.cfg.validate());
  if (c.blocks == nullptr || c.ring_k == nullptr || c.ring_v == nullptr) return Status::kErrorNullPointer;
  if (c.num_kv_heads <= 0 || c.max_blocks < 1) return Status::kErrorInvalidArgument;
  const quant::BlockLayout l = quant::block_layout(c.cfg);
  if (l.bytes != c.layout.bytes || l.kc != c.layout.kc || l.km != c.layout.km || l.vc != c.layout.vc || l.vm != c.layout.vm)
    return Status::kErrorInvalidArgument;
  return Status::kSuccess;
}

inline Status kivi_append_check(const kernels::KiviCacheView& cache, const Half* k, const Half* v, const int* n_before,
                                const std::uint32_t* flags, int batch) {
  MEMATTN_RETURN_IF_ERROR(kivi_check_view(cache));
  if (k == nullptr || v == nullptr || n_before == nullptr || flags == nullptr) return Status::kErrorNullPointer;
  if (batch <= 0) return Status::kErrorInvalidShape;
  return Status::kSuccess;
}

inline Status kivi_decode_check(const kernels::KiviCacheView& cache, const float* q, const float* o, const int* n_tokens, int batch,
                                int q_heads) {
  MEMATTN_RETURN_IF_ERROR(kivi_check_view(cache));
  if (q == nullptr || o == nullptr || n_tokens == nullptr) return Status::kErrorNullPointer;
  if (batch <= 0) return Status::kErrorInvalidShape;
  if (q_heads <= 0 || q_heads % cache.num_kv_heads != 0 || q_heads / cache.num_kv_heads > kernels::kKiviMaxGroup)
    return Status::kErrorGqaRatio;
  return Status::kSuccess;
}

inline kernels::KiviDecodeParams kivi_decode_params(const kernels::KiviCacheView& cache, const float* q, float* o, const int* n_tokens,
                                                    int batch, int q_heads) {
  return kernels::KiviDecodeParams{cache, q, o, n_tokens, batch, q_heads, 1.f / std::sqrt(static_cast<float>(cache.cfg.head_dim))};
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
