// KIVI 2/4/8-bit KV cache on the GPU: decode quantize-append and fused decode attention over
// [quantised blocks | fp16 ring] (kernels in memattn/kernels/kivi_append.cuh, kivi_decode.cuh;
// argument checks in memattn/cuda/kivi_params.cuh).
// The block format and the quantiser are those of memattn/quant/kivi.hpp, shared with the CPU
// cache (memattn/cpu/kivi_kv_cache.hpp): the same tokens give the same bytes on both.
//
//   kernels::KiviCacheView view{cfg, quant::block_layout(cfg), blocks, ring_k, ring_v, Hkv, max_blocks};
//   cuda::kivi_append_decode(view, k, v, n_before, flags, B, stream);   // before attention
//   cuda::kivi_decode(view, q, o, n_tokens, B, Hq, stream);             // n_tokens = n_before + 1
//
// Contract: every argument is checked before anything is launched; on error nothing is written.
// kErrorInvalidArgument (config invalid: bits, group, residual; max_blocks < 1), kErrorUnsupportedHeadDim,
// kErrorNullPointer, kErrorGqaRatio (Hq not a multiple of Hkv, or more than 8 query heads per KV
// head), kErrorNoDevice / kErrorCudaRuntime. The caller sizes blocks for max_blocks records per
// sequence ((N - R) / G at most) and guarantees N fits; sequence lengths are read on the device.
// Non-finite k/v are stored poisoned and flagged in flags[b] (bit 0), never silently.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/core/status.hpp"
#include "memattn/cuda/kivi_params.cuh"
#include "memattn/cuda/runtime.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

inline Status kivi_append_decode(const kernels::KiviCacheView& cache, const Half* k, const Half* v, const int* n_before,
                                 std::uint32_t* flags, int batch, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(kivi_append_check(cache, k, v, n_before, flags, batch));
  if (!device_available()) return Status::kErrorNoDevice;
  kernels::KiviAppendParams p{cache, k, v, n_before, flags, batch};
  kernels::kivi_append_decode_kernel<128><<<dim3(static_cast<unsigned>(batch), static_cast<unsigned>(cache.num_kv_heads)), 128, 0, stream>>>(p);
  return launch_status();
}

inline Status kivi_decode(const kernels::KiviCacheView& cache, const float* q, float* o, const int* n_tokens, int batch,
                          int q_heads, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(kivi_decode_check(cache, q, o, n_tokens, batch, q_heads));
  if (!device_available()) return Status::kErrorNoDevice;
  const kernels::KiviDecodeParams p = kivi_decode_params(cache, q, o, n_tokens, batch, q_heads);
  kernels::kivi_decode_kernel<128><<<dim3(static_cast<unsigned>(batch), static_cast<unsigned>(cache.num_kv_heads)), 128, 0, stream>>>(p);
  return launch_status();
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
