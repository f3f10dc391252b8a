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
// Splits fill about 8 CTAs per SM (at least 256 tokens each); split_keys > 0 forces the split size.
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
// 144 vs 185 us; with 512-token splits path 3 lost at B 1 x 64K, 308-496 us, and B 16 x 4096).
//
// Contract: every argument is checked before the launch; on error nothing is written.
// kErrorNullPointer, kErrorUnsupportedHeadDim (head_dim > 256), kErrorInvalidArgument (d_keep not
// in [1, head_dim], row/segment strides too small, KIVI bits not 2/4/8, group not 32/64/128,
// v_group not dividing head_dim, block/row words too few, kq_first without n_blocks, path not
// 0/1/2/3), kErrorNotSupported (path 2 or 3 on a layout its kernel cannot read; path 3 without the
// split-KV workspace),
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
#include "memattn/kernels/think_decode.cuh"
#include "memattn/kernels/think_decode_lanes.cuh"
#include "memattn/kernels/think_decode_mma.cuh"

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
  if (p.v_channels != nullptr && p.v_old == nullptr) return Status::kErrorNullPointer;  // value extension
  if (p.v_old != nullptr) {
    const int width = p.v_channels != nullptr ? p.dv_keep : p.head_dim;
    if (width < 1 || width > p.head_dim || p.old_v_row_stride < width || p.v_old_seg_stride < 0)
      return Status::kErrorInvalidArgument;
  }
  if (p.n_q != nullptr) {  // KIVI region
    if (p.kq == nullptr || p.kqm == nullptr || p.vq == nullptr || p.vqm == nullptr) return Status::kErrorNullPointer;
    if (p.kq_first != nullptr && (p.n_blocks == nullptr || p.kq_first_seg_stride < 0)) return Status::kErrorInvalidArgument;
    auto bits_ok = [](int b) { return b == 2 || b == 4 || b == 8; };
    if (!bits_ok(p.bits_k) || !bits_ok(p.bits_v) || (p.qgroup != 32 && p.qgroup != 64 && p.qgroup != 128) ||
        p.v_group < 1 || p.head_dim % p.v_group != 0)
      return Status::kErrorInvalidArgument;
    const long long k_words = (static_cast<long long>(p.qgroup) * p.d_keep * p.bits_k + 31) / 32;
    const int v_words = (p.head_dim * p.bits_v + 31) / 32;
    if (p.kq_block_words < k_words || p.v_words < v_words || p.kq_seg_stride < 0 || p.kqm_seg_stride < 0 ||
        p.vq_seg_stride < 0 || p.vqm_seg_stride < 0)
      return Status::kErrorInvalidArgument;
  }
  if (p.path < 0 || p.path > 3) return Status::kErrorInvalidArgument;
  if (p.scores != nullptr && (p.scores_row_stride < 1 || p.scores_seg_stride < static_cast<long long>(p.q_heads / p.kv_heads) * p.scores_row_stride))
    return Status::kErrorInvalidArgument;
  return Status::kSuccess;
}

namespace think_detail {

template <int kCh, bool kQuant>
Status launch_ch(const kernels::ThinKDecodeParams& p, const kernels::ThinKSplit& sp, cudaStream_t stream) {
  const int smem = kernels::ThinKSmem(p.head_dim, p.d_keep).bytes(p.q_heads / p.kv_heads);
  MEMATTN_RETURN_IF_ERROR(allow_dynamic_smem(kernels::think_decode_kernel<kCh, kQuant>, smem));
  const unsigned segments = static_cast<unsigned>(p.batch) * static_cast<unsigned>(p.kv_heads);
  kernels::think_decode_kernel<kCh, kQuant>
      <<<dim3(segments, static_cast<unsigned>(sp.splits)), kernels::kThinKThreads, smem, stream>>>(p, sp);
  MEMATTN_RETURN_IF_ERROR(launch_status());
  if (sp.splits > 1) {
    kernels::think_combine_kernel<<<segments, kernels::kThinKThreads, 0, stream>>>(p, sp);
    MEMATTN_RETURN_IF_ERROR(launch_status());
  }
  return Status::kSuccess;
}

// The lane-group kernel reads 16-byte pieces: head_dim 64 / 128 / 256, fp16 rows and segments
// at multiples of 8 halves from 16-byte aligned bases, no value extension; with the KIVI region,
// d_keep a multiple of 8 (a lane's 8 codes are contiguous), v_group a multiple of 8, and code /
// meta arrays aligned for its 4- / 8- / 16-byte pieces.
inline bool lanes_layout(const kernels::ThinKDecodeParams& p) {
  auto aligned = [](const void* ptr, std::uintptr_t a) { return reinterpret_cast<std::uintptr_t>(ptr) % a == 0; };
  if (p.v_channels != nullptr) return false;
  if (p.head_dim != 64 && p.head_dim != 128 && p.head_dim != 256) return false;
  if (!aligned(p.k_old, 16) || !aligned(p.k_new, 16) || !aligned(p.v, 16) || (p.v_old != nullptr && !aligned(p.v_old, 16)))
    return false;
  if (p.old_row_stride % 8 != 0 || p.old_seg_stride % 8 != 0 || p.new_seg_stride % 8 != 0 || p.v_seg_stride % 8 != 0)
    return false;
  if (p.v_old != nullptr && (p.old_v_row_stride % 8 != 0 || p.v_old_seg_stride % 8 != 0)) return false;
  if (p.n_q == nullptr) return true;
  return p.d_keep % 8 == 0 && p.v_group % 8 == 0 && aligned(p.kq, 8) && p.kq_seg_stride % 2 == 0 &&
         p.kq_block_words % 2 == 0 && aligned(p.kqm, 16) && p.kqm_seg_stride % 8 == 0 && aligned(p.vq, 8) &&
         p.vq_seg_stride % 2 == 0 && p.v_words % 2 == 0 && aligned(p.vqm, 4) && p.vqm_seg_stride % 2 == 0;
}

template <int D, int R, bool kQuant>
Status launch_lanes_r(const kernels::ThinKDecodeParams& p, const kernels::ThinKSplit& sp, cudaStream_t stream) {
  const unsigned segments = static_cast<unsigned>(p.batch) * static_cast<unsigned>(p.kv_heads);
  const int grid_splits = sp.splits - sp.slot0;  // after the tensor-core kernel: the slots above its own
  kernels::think_decode_lanes_kernel<D, R, kQuant>
      <<<dim3(segments, static_cast<unsigned>(grid_splits)), kernels::kDecodeThreads, 0, stream>>>(p, sp);
  MEMATTN_RETURN_IF_ERROR(launch_status());
  if (sp.splits > 1) {
    kernels::think_combine_kernel<<<segments, kernels::kThinKThreads, 0, stream>>>(p, sp);
    MEMATTN_RETURN_IF_ERROR(launch_status());
  }
  return Status::kSuccess;
}

template <int D, bool kQuant>
Status launch_lanes_d(const kernels::ThinKDecodeParams& p, const kernels::ThinKSplit& sp, cudaStream_t stream) {
  const int g = p.q_heads / p.kv_heads;  // rows of the tile: g rounded up to a power of two
  if (g == 1) return launch_lanes_r<D, 1, kQuant>(p, sp, stream);
  if (g == 2) return launch_lanes_r<D, 2, kQuant>(p, sp, stream);
  if (g <= 4) return launch_lanes_r<D, 4, kQuant>(p, sp, stream);
  return launch_lanes_r<D, 8, kQuant>(p, sp, stream);
}

template <bool kQuant>
Status launch_lanes(const kernels::ThinKDecodeParams& p, const kernels::ThinKSplit& sp, cudaStream_t stream) {
  if (p.head_dim == 64) return launch_lanes_d<64, kQuant>(p, sp, stream);
  if (p.head_dim == 128) return launch_lanes_d<128, kQuant>(p, sp, stream);
  return launch_lanes_d<256, kQuant>(p, sp, stream);
}

// The tensor-core kernel reads the KIVI region in 16-byte pieces staged per warp: head_dim 64 /
// 128, 2- / 4-bit codes, d_keep a multiple of 8 (code rows of whole 16-/32-bit pieces), v_group a
// multiple of 32 (a 32-channel value unit in one group), K code blocks, K meta and V code rows at
// 16-byte multiples from 16-byte aligned bases; the fp16 regions go to the lane-group kernel.
inline bool mma_layout(const kernels::ThinKDecodeParams& p) {
  auto aligned = [](const void* ptr, std::uintptr_t a) { return reinterpret_cast<std::uintptr_t>(ptr) % a == 0; };
  auto bits_ok = [](int b) { return b == 2 || b == 4; };
  if (p.n_q == nullptr || !lanes_layout(p)) return false;
  if ((p.head_dim != 64 && p.head_dim != 128) || !bits_ok(p.bits_k) || !bits_ok(p.bits_v)) return false;
  return p.d_keep % 8 == 0 && p.v_group % 32 == 0 && aligned(p.kq, 16) && p.kq_seg_stride % 4 == 0 &&
         p.kq_block_words % 4 == 0 && aligned(p.kqm, 16) && p.kqm_seg_stride % 8 == 0 && aligned(p.vq, 16) &&
         p.vq_seg_stride % 4 == 0 && p.v_words % 4 == 0 && aligned(p.vqm, 4) && p.vqm_seg_stride % 2 == 0;
}

template <int D, int KB, int VB>
Status launch_mma_bits(const kernels::ThinKDecodeParams& p, const kernels::ThinKSplit& sp, int grid_splits,
                       cudaStream_t stream) {
  const kernels::think_mma::StageGeom geo =
      kernels::think_mma::stage_geom(p.d_keep, KB, p.v_words * 4, p.head_dim / p.v_group);
  const int smem = kernels::think_mma::smem_bytes(geo, D);
  MEMATTN_RETURN_IF_ERROR(allow_dynamic_smem(kernels::think_decode_mma_kernel<D, KB, VB>, smem));
  const unsigned segments = static_cast<unsigned>(p.batch) * static_cast<unsigned>(p.kv_heads);
  kernels::think_decode_mma_kernel<D, KB, VB>
      <<<dim3(segments, static_cast<unsigned>(grid_splits)), kernels::think_mma::kThreads, smem, stream>>>(p, sp);
  return launch_status();
}

template <int D>
Status launch_mma_d(const kernels::ThinKDecodeParams& p, const kernels::ThinKSplit& sp, int grid_splits, cudaStream_t stream) {
  if (p.bits_k == 2) {
    return p.bits_v == 2 ? launch_mma_bits<D, 2, 2>(p, sp, grid_splits, stream) : launch_mma_bits<D, 2, 4>(p, sp, grid_splits, stream);
  }
  return p.bits_v == 2 ? launch_mma_bits<D, 4, 2>(p, sp, grid_splits, stream) : launch_mma_bits<D, 4, 4>(p, sp, grid_splits, stream);
}

// Path 3: sp.splits = 2 * N partial slots, N = grid splits of each kernel; the tensor-core kernel
// fills slots [0, N) from the KIVI region, the lane-group kernel slots [N, 2N) from the fp16
// regions, then the combine merges all.
inline Status launch_mma(const kernels::ThinKDecodeParams& p, const kernels::ThinKSplit& sp, cudaStream_t stream) {
  const int n = sp.splits / 2;
  MEMATTN_RETURN_IF_ERROR(p.head_dim == 64 ? launch_mma_d<64>(p, sp, n, stream) : launch_mma_d<128>(p, sp, n, stream));
  kernels::ThinKSplit rest = sp;
  rest.after_quantised = true;
  rest.slot0 = n;
  return launch_lanes<true>(p, rest, stream);
}

// Auto (path 0) in the split-KV call: the tensor-core kernel for long KIVI regions (measured above).
constexpr int kThinKMmaAutoTokens = 4096;
constexpr int kThinKMmaMinSplit = 2048;
inline kernels::ThinKDecodeParams resolve_path(const kernels::ThinKDecodeParams& p, int max_tokens) {
  kernels::ThinKDecodeParams r = p;
  if (p.path == 0 && max_tokens >= kThinKMmaAutoTokens && mma_layout(p)) r.path = 3;
  return r;
}

inline Status launch(const kernels::ThinKDecodeParams& p, const kernels::ThinKSplit& sp, cudaStream_t stream) {
  if (p.path == 3) {
    if (!mma_layout(p) || sp.splits < 2) return Status::kErrorNotSupported;
    return launch_mma(p, sp, stream);
  }
  // auto: only where no row holds padding (d_keep a multiple of 8), whose values the lane-group
  // kernel reads (times q = 0: garbage there would turn into NaN); path 2 accepts padded rows.
  const bool lanes = p.path == 2 || (p.path == 0 && p.d_keep % 8 == 0 && lanes_layout(p));
  if (lanes) {
    if (!lanes_layout(p)) return Status::kErrorNotSupported;
    return p.n_q != nullptr ? launch_lanes<true>(p, sp, stream) : launch_lanes<false>(p, sp, stream);
  }
  const bool narrow = p.head_dim <= kernels::kThinKThreads;
  if (p.n_q != nullptr) return narrow ? launch_ch<1, true>(p, sp, stream) : launch_ch<2, true>(p, sp, stream);
  return narrow ? launch_ch<1, false>(p, sp, stream) : launch_ch<2, false>(p, sp, stream);
}

// Splits for segments of at most max_tokens tokens: about 8 CTAs per SM, >= 256 tokens each.
inline Status plan(const kernels::ThinKDecodeParams& p, int max_tokens, int split_keys, kernels::ThinKSplit* sp) {
  if (max_tokens < 1 || split_keys < 0) return Status::kErrorInvalidArgument;
  const long long segments = static_cast<long long>(p.batch) * p.kv_heads;
  int keys = split_keys;
  if (keys == 0) {
    int sms = 0;
    MEMATTN_RETURN_IF_ERROR(sm_count(&sms));
    const long long want = std::max<long long>(1, (8LL * sms + segments - 1) / segments);
    keys = static_cast<int>(std::max<long long>(256, (max_tokens + want - 1) / want));
    // the tensor-core kernel's per-split set-up (q, KIVI scales) needs longer splits
    if (p.path == 3) keys = std::max(keys, kThinKMmaMinSplit);
  }
  keys = (keys + kernels::kThinKTile - 1) / kernels::kThinKTile * kernels::kThinKTile;
  sp->split_keys = keys;
  sp->splits = (max_tokens + keys - 1) / keys;
  if (sp->splits > 65535) return Status::kErrorInvalidArgument;
  if (p.path == 3) sp->splits *= 2;  // the tensor-core kernel's slots, then the lane-group kernel's
  return Status::kSuccess;
}

inline std::size_t workspace_bytes(const kernels::ThinKDecodeParams& p, const kernels::ThinKSplit& sp) {
  if (sp.splits <= 1) return 0;
  const std::size_t rows = static_cast<std::size_t>(sp.splits) * static_cast<std::size_t>(p.batch) *
                           static_cast<std::size_t>(p.q_heads);
  return rows * (static_cast<std::size_t>(p.head_dim) + 2) * sizeof(float);
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
    const std::size_t rows = need / ((static_cast<std::size_t>(p.head_dim) + 2) * sizeof(float));
    sp.acc = static_cast<float*>(workspace);
    sp.ml = sp.acc + rows * static_cast<std::size_t>(p.head_dim);
  }
  return think_detail::launch(rp, sp, stream);
}

// tau of the full head_dim (§3.6), for callers filling ThinKDecodeParams::scale.
inline float think_scale(int head_dim) { return 1.f / std::sqrt(static_cast<float>(head_dim)); }

}  // namespace cuda
MEMATTN_NAMESPACE_END
