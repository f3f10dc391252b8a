// ThinK two-segment decode on the GPU (kernel: memattn/kernels/think_decode.cuh): one query token
// per sequence over [pruned keys with d_keep channels + channel list | full-width keys], values full
// width, one softmax. The segment layout is the CPU composed cache's (cpu/composed_kv_cache.hpp):
// per (sequence, KV head) old rows, then new rows, values old then new.
//
//   kernels::ThinKDecodeParams p{...};          // pointers, strides, per-segment lengths on device
//   cuda::think_decode(p, stream);
//
// Contract: every argument is checked before the launch; on error nothing is written.
// kErrorNullPointer, kErrorUnsupportedHeadDim (head_dim > 256), kErrorInvalidArgument (d_keep not
// in [1, head_dim], row/segment strides too small), kErrorGqaRatio (more than 8 query heads per KV
// head or not a multiple), kErrorInvalidShape (batch < 1), kErrorNoDevice / kErrorCudaRuntime.
// The caller guarantees n_old/n_new fit the strides and n_old + n_new >= 1 per segment.
#pragma once

#include <cuda_runtime.h>

#include <cmath>

#include "memattn/core/status.hpp"
#include "memattn/cuda/runtime.cuh"
#include "memattn/kernels/think_decode.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

inline Status think_decode_check(const kernels::ThinKDecodeParams& p) {
  if (p.k_old == nullptr || p.channels == nullptr || p.k_new == nullptr || p.v == nullptr || p.n_old == nullptr ||
      p.n_new == nullptr || p.q == nullptr || p.o == nullptr)
    return Status::kErrorNullPointer;
  if (p.batch < 1) return Status::kErrorInvalidShape;
  if (p.head_dim < 1 || p.head_dim > kernels::kThinKMaxDim) return Status::kErrorUnsupportedHeadDim;
  if (p.d_keep < 1 || p.d_keep > p.head_dim || p.old_row_stride < p.d_keep || p.old_seg_stride < 0 ||
      p.new_seg_stride < 0 || p.v_seg_stride < 0 || !(p.scale > 0.f))
    return Status::kErrorInvalidArgument;
  if (p.kv_heads < 1 || p.q_heads < p.kv_heads || p.q_heads % p.kv_heads != 0 || p.q_heads / p.kv_heads > kernels::kThinKMaxGroup)
    return Status::kErrorGqaRatio;
  return Status::kSuccess;
}

inline Status think_decode(const kernels::ThinKDecodeParams& p, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(think_decode_check(p));
  if (!device_available()) return Status::kErrorNoDevice;
  kernels::think_decode_kernel<128><<<dim3(static_cast<unsigned>(p.batch), static_cast<unsigned>(p.kv_heads)), 128, 0, stream>>>(p);
  return launch_status();
}

// tau of the full head_dim (§3.6), for callers filling ThinKDecodeParams::scale.
inline float think_scale(int head_dim) { return 1.f / std::sqrt(static_cast<float>(head_dim)); }

}  // namespace cuda
MEMATTN_NAMESPACE_END
