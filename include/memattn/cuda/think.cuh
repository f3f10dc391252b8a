// ThinK two-segment decode on the GPU, and the decode of the composed cache Cache<Evict, ThinK,
// KIVI> (kernel: memattn/kernels/think_decode.cuh): one query token per sequence over [KIVI blocks
// with d_keep key channels | pruned keys with d_keep channels + channel list | full-width keys], one
// softmax. The segment layout is the CPU composed cache's (cpu/composed_kv_cache.hpp, exported by
// its regions()): per (sequence, KV head) quantised blocks, old rows, then new rows. Values: old
// then new in v, or old ones apart in v_old (full width, or with the value extension (vprune)
// v_channels / dv_keep: kept channels only) and v holding the new tokens' values. KIVI alone is
// d_keep = head_dim with the identity channel list.
// Eviction: set scores / lse and run cuda::evict_accumulate_scores on them afterwards (H2O,
// Scissorhands state update; EvictScoreParams::seg_lens = n_q + n_old + n_new per segment).
//
//   kernels::ThinKDecodeParams p{...};          // pointers, strides, per-segment lengths on device
//   cuda::think_decode(p, stream);              // one CTA per (sequence, KV head)
// Split-KV (long contexts, small batches): give the longest segment as a host-side bound and a
// workspace:
//   std::size_t bytes; cuda::think_decode_workspace_size(p, max_tokens, &bytes);
//   cuda::think_decode(p, max_tokens, ws, bytes, stream);   // + one small combine kernel
// Splits fill about 8 CTAs per SM (at least 256 tokens each; the tensor-core kernels one wave of
// their CTAs, path 3's splits at least 2048 tokens); split_keys > 0 forces the split size.
// Two kernels: the lane-group kernel (think_decode_lanes.cuh: 16-byte pieces, cp.async pipeline,
// the dense decode's inner loop) for head_dim 64 / 128 / 256 with fp16 rows and segments at
// multiples of 8 halves from 16-byte aligned bases (pad old rows to a multiple of 8 channels; the
// padding must hold finite values, its q slots are 0) and, with the KIVI region, d_keep a multiple
// of 8 (lanes_layout() lists the rest), and the tile kernel (think_decode.cuh) for everything else:
// the value extension, unaligned rows, other head_dims. p.path picks one (0: the
// lane-group kernel where the layout allows it and d_keep is a multiple of 8 -- ThinK's
// granularity=8 -- so that no padding is read; 2: also on padded rows; 3: the tensor-core kernel
// (think_decode_mma.cuh) over the KIVI region plus the lane-group kernel over the fp16 regions,
// split-KV call only, head_dim 64 / 128, 2- / 4-bit K and V, d_keep a multiple of 8, v_group a
// multiple of 32, 16-byte aligned code rows (mma_layout() lists the rest). Auto picks path 3 in the
// split-KV call where mma_layout() holds and max_tokens >= kThinKMmaAutoTokens, with splits of at
// least kThinKMmaMinSplit tokens (H200, 2026-11-27, think + KIVI 4/2, d_keep 80, path 3 vs the
// lane-group kernel: B 16 x 64K tokens 1301 vs 2285 us, B 1 x 64K 183 vs 322 us, B 16 x 4096
// 144 vs 185 us; with 512-token splits path 3 lost at B 1 x 64K, 308-496 us, and B 16 x 4096;
// measured before the 2026-11-27 rewrite of its dequantisation, not re-timed). Path 3's values
// are fp16 (c s_v + z_v, 2^-12 of |v|) and its logits fp32-exact: outputs meet the quantization
// spec's Q-K1 (robust relative 2e-3) against fp32 dequantisation, paths 1 and 2 1e-4.
// Path 3's kernel also serves cuda::kivi_decode (kivi.cuh), reading a KIVI cache's records in
// place (ThinKDecodeParams::rec_*; think_decode refuses those fields: kErrorInvalidArgument).
// Path 4: the fp16 regions on tensor cores too (think_decode_mma16.cuh: q as fp16 hi / lo, exact
// fp16 keys and values, fp32 accumulation: the lane-group kernel's results to ~1e-6), the KIVI
// region as in path 3; the lane-group kernel's layout (padded old rows included) at head_dim 64 /
// 128, and the value extension with old value rows padded alike (not with a KIVI region)
// (mma16_layout()); without a KIVI region also in the one-CTA-per-segment call. Auto picks it
// for caches without a KIVI region whose rows it reads without padding (mma16_auto(): 1.2-2.7x
// the lane-group kernel on an H200, 2026-11-28).
//
// Contract: every argument is checked before the launch; on error nothing is written.
// kErrorNullPointer, kErrorUnsupportedHeadDim (head_dim > 256), kErrorInvalidArgument (d_keep not
// in [1, head_dim], row/segment strides too small, KIVI bits not 2/4/8, group not 32/64/128,
// v_group not dividing head_dim, block/row words too few, kq_first without n_blocks, path not
// 0-4, mma_cp_async or mma_unpaired not 0 / 1, rec_block_bytes set), kErrorNotSupported (paths 2-4 on a layout their kernels cannot read; path 3, or 4 with a
// KIVI region, without the split-KV workspace),
// kErrorGqaRatio (more than 8 query heads per KV head or not a multiple), kErrorInvalidShape
// (batch < 1), kErrorNoDevice / kErrorCudaRuntime.
// The caller guarantees n_q/n_old/n_new (and the block lists) fit the strides and n_q + n_old +
// n_new >= 1 per segment; with kq_first, n_blocks[s] >= 1 wherever n_q[s] > 0.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "memattn/core/status.hpp"
#include "memattn/cuda/runtime.cuh"
#include "memattn/cuda/stream_launch.cuh"
#include "memattn/cuda/think_params.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

namespace think_detail {

// The kernels on `stream` (dynamic shared memory above 48 KiB opted in first).
inline Status launch(const kernels::ThinKDecodeParams& p, const kernels::ThinKSplit& sp, cudaStream_t stream) {
  return think_launches(p, sp, stream_launch(stream));
}

// plan() on the current device's SM count.
inline Status plan(const kernels::ThinKDecodeParams& p, int max_tokens, int split_keys, kernels::ThinKSplit* sp) {
  int sms = 0;
  if (split_keys == 0) MEMATTN_RETURN_IF_ERROR(sm_count(&sms));
  return plan(p, max_tokens, split_keys, sms, sp);
}

}  // namespace think_detail

inline Status think_decode(const kernels::ThinKDecodeParams& p, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(think_decode_check(p));
  if (!device_available()) return Status::kErrorNoDevice;
  return think_detail::launch(p, kernels::ThinKSplit{}, stream);
}

// Workspace of the split-KV call for segments of at most max_tokens tokens (0 bytes: one split).
inline Status think_decode_workspace_size(const kernels::ThinKDecodeParams& p, int max_tokens, std::size_t* bytes,
                                          int split_keys = 0) {
  if (bytes == nullptr) return Status::kErrorNullPointer;
  MEMATTN_RETURN_IF_ERROR(think_decode_check(p));
  if (!device_available()) return Status::kErrorNoDevice;
  const kernels::ThinKDecodeParams rp = think_detail::resolve_path(p, max_tokens);
  kernels::ThinKSplit sp;
  MEMATTN_RETURN_IF_ERROR(think_detail::plan(rp, max_tokens, split_keys, &sp));
  *bytes = think_detail::workspace_bytes(rp, sp);
  return Status::kSuccess;
}

// Split-KV decode: max_tokens bounds n_q + n_old + n_new of every segment (tokens beyond it are not
// read: the caller's bound must hold); workspace of think_decode_workspace_size bytes (16-byte
// aligned), kErrorWorkspaceTooSmall otherwise.
inline Status think_decode(const kernels::ThinKDecodeParams& p, int max_tokens, void* workspace,
                           std::size_t workspace_bytes, cudaStream_t stream, int split_keys = 0) {
  MEMATTN_RETURN_IF_ERROR(think_decode_check(p));
  if (!device_available()) return Status::kErrorNoDevice;
  const kernels::ThinKDecodeParams rp = think_detail::resolve_path(p, max_tokens);
  kernels::ThinKSplit sp;
  MEMATTN_RETURN_IF_ERROR(think_detail::plan(rp, max_tokens, split_keys, &sp));
  const std::size_t need = think_detail::workspace_bytes(rp, sp);
  if (need > 0) {
    if (workspace == nullptr) return Status::kErrorNullPointer;
    if (workspace_bytes < need || reinterpret_cast<std::uintptr_t>(workspace) % 16 != 0)
      return Status::kErrorWorkspaceTooSmall;
    think_detail::carve(p, workspace, need, &sp);
  }
  return think_detail::launch(rp, sp, stream);
}

// tau of the full head_dim (§3.6), for callers filling ThinKDecodeParams::scale.
inline float think_scale(int head_dim) { return 1.f / std::sqrt(static_cast<float>(head_dim)); }

}  // namespace cuda
MEMATTN_NAMESPACE_END
