// KIVI 2/4/8-bit KV cache on the GPU: decode quantize-append and fused decode attention over
// [quantised blocks | fp16 ring] (kernels in memattn/kernels/kivi_append.cuh, kivi_decode.cuh;
// argument checks in memattn/cuda/kivi_params.cuh).
// The block format and the quantiser are those of memattn/quant/kivi.hpp, shared with the CPU
// cache (memattn/cpu/kivi_kv_cache.hpp): the same tokens give the same bytes on both.
//
//   kernels::KiviCacheView view{cfg, quant::block_layout(cfg), blocks, ring_k, ring_v, Hkv, max_blocks};
//   cuda::kivi_append_decode(view, k, v, n_before, flags, B, stream);   // before attention
//   cuda::kivi_decode(view, q, o, n_tokens, B, Hq, stream);             // n_tokens = n_before + 1
// Split-KV (what long contexts want): give a host-side bound on the tokens and a workspace:
//   std::size_t bytes; cuda::kivi_decode_workspace_size(view, B, Hq, max_tokens, &bytes);
//   cuda::kivi_decode(view, q, o, n_tokens, B, Hq, max_tokens, ws, bytes, stream);
// It runs the composed cache's tensor-core kernel (think_decode_mma.cuh, reading the KIVI records
// as they are) over the blocks, where head_dim is 64 / 128, K and V 2- / 4-bit and the value
// groups multiples of 32 channels (kivi_mma_layout), the ring beside it on CUDA cores, and one
// small combine kernel (splits: one wave of the tensor-core kernel, >= 2048 tokens each);
// elsewhere the CUDA-core kernel split over its tiles (about 8 CTAs per SM;
// split_keys > 0 forces the tokens per split, tensor_cores = false the CUDA-core kernel). Tensor
// cores: values enter as fp16 c s_v + z_v (2^-12 of |v|), logits fp32-exact (quantization spec
// Q-K1, robust relative error 2e-3 against fp32 dequantisation); CUDA cores: 1e-5.
//
// Contract: every argument is checked before anything is launched; on error nothing is written.
// kErrorInvalidArgument (config invalid: bits, group, residual; max_blocks < 1), kErrorUnsupportedHeadDim,
// kErrorNullPointer, kErrorGqaRatio (Hq not a multiple of Hkv, or more than 8 query heads per KV
// head), kErrorNoDevice / kErrorCudaRuntime; the split-KV call also kErrorInvalidArgument (max_tokens
// < 1), kErrorNullPointer / kErrorWorkspaceTooSmall (workspace missing, short or not 256-byte
// aligned). The caller sizes blocks for max_blocks records per
// sequence ((N - R) / G at most) and guarantees N fits; sequence lengths are read on the device.
// Non-finite k/v are stored poisoned and flagged in flags[b] (bit 0), never silently.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "memattn/core/status.hpp"
#include "memattn/core/workspace.hpp"
#include "memattn/cuda/kivi_params.cuh"
#include "memattn/cuda/runtime.cuh"
#include "memattn/cuda/stream_launch.cuh"

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

namespace kivi_detail {
inline Status plan(const kernels::KiviCacheView& cache, int batch, int max_tokens, int split_keys, bool tensor_cores, KiviPlan* pl) {
  int sms = 0;
  if (split_keys == 0) MEMATTN_RETURN_IF_ERROR(sm_count(&sms));
  return kivi_plan(cache, batch, max_tokens, split_keys, tensor_cores, sms, pl);
}
}  // namespace kivi_detail

// Workspace of the split-KV call for sequences of at most max_tokens tokens.
inline Status kivi_decode_workspace_size(const kernels::KiviCacheView& cache, int batch, int q_heads, int max_tokens,
                                         std::size_t* bytes, int split_keys = 0, bool tensor_cores = true) {
  if (bytes == nullptr) return Status::kErrorNullPointer;
  MEMATTN_RETURN_IF_ERROR(kivi_check_shape(cache, batch, q_heads));
  if (!device_available()) return Status::kErrorNoDevice;
  KiviPlan pl;
  MEMATTN_RETURN_IF_ERROR(kivi_detail::plan(cache, batch, max_tokens, split_keys, tensor_cores, &pl));
  *bytes = kivi_workspace_bytes(cache, batch, q_heads, pl);
  return Status::kSuccess;
}

// Split-KV decode: n_tokens[b] <= max_tokens (tokens beyond the bound are not read: the caller's
// bound must hold); a workspace of kivi_decode_workspace_size bytes.
inline Status kivi_decode(const kernels::KiviCacheView& cache, const float* q, float* o, const int* n_tokens, int batch, int q_heads,
                          int max_tokens, void* workspace, std::size_t workspace_bytes, cudaStream_t stream, int split_keys = 0,
                          bool tensor_cores = true) {
  MEMATTN_RETURN_IF_ERROR(kivi_decode_check(cache, q, o, n_tokens, batch, q_heads));
  if (!device_available()) return Status::kErrorNoDevice;
  KiviPlan pl;
  MEMATTN_RETURN_IF_ERROR(kivi_detail::plan(cache, batch, max_tokens, split_keys, tensor_cores, &pl));
  const std::size_t need = kivi_workspace_bytes(cache, batch, q_heads, pl);
  if (need > 0 && workspace == nullptr) return Status::kErrorNullPointer;
  Workspace ws(workspace, workspace_bytes);
  const KiviBuffers buf = kivi_carve(ws, cache, batch, q_heads, pl);
  MEMATTN_RETURN_IF_ERROR(ws.status());
  return kivi_decode_launches(cache, q, o, n_tokens, batch, q_heads, pl, buf, stream_launch(stream));
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
