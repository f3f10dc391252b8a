// MiKV mixed-precision cache on the GPU: fused decode attention over the tiers of each
// (sequence, KV head) segment (kernel in memattn/kernels/mikv_decode.cuh, argument check in
// memattn/cuda/mikv_params.cuh). The records are those of memattn/quant/mixed_format.hpp, written
// by the same quantiser as the CPU cache (memattn/cpu/mikv_kv_cache.hpp), so device copies of the
// CPU pools decode to the same values.
// The Low tier is either per-token records (lo_format = kRows, MikvSegment::lo_rec) or, for
// `lowk=1` caches, quant::MixedBlockPool's arrays as they are (lo_format = kBlocks,
// MikvSegment::lo_blk: per-channel K blocks of 32 rows, per-row V groups, exact staging rows).
//
//   kernels::MikvSegment seg[S] = {...};                 // device array, one per (seq, KV head)
//   kernels::MikvDecodeParams p{seg, S, G, lo_cfg, hi_cfg, q, o, lse, probs, tau};  // + p.lo_format
//   cuda::mikv_decode(p, stream);                        // probs: stash of G x (lo + hi + exact) per segment
//
// Contract: arguments are checked before any launch and nothing is written on error:
// kErrorNullPointer, kErrorInvalidArgument (row configs: hi_cfg must be 8-bit with lo_cfg's
// head_dim and groups; groups <= 8; lo_format kRows or kBlocks), kErrorUnsupportedHeadDim
// (head_dim), kErrorGqaRatio (group outside [1, 8]), kErrorInvalidShape (num_segments < 1),
// kErrorNoDevice / kErrorCudaRuntime.
// Segment contents (pointers, counts, stash offsets) live on the device and are the caller's.
#pragma once

#include <cuda_runtime.h>

#include "memattn/core/status.hpp"
#include "memattn/cuda/mikv_params.cuh"
#include "memattn/cuda/runtime.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

inline Status mikv_decode(const kernels::MikvDecodeParams& p, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(mikv_check(p));
  if (!device_available()) return Status::kErrorNoDevice;
  kernels::mikv_decode_kernel<128><<<static_cast<unsigned>(p.num_segments), 128, 0, stream>>>(p);
  return launch_status();
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
