// Host side of the ThinK / composed-cache GPU decode apart from the launches (so also usable by
// tests/emu, the CPU emulator that runs the kernels in CI): the argument check, which kernel a
// layout allows (lanes_layout, mma_layout, resolve_path), the split plan and workspace, and the
// launch sequence over a caller-given launcher. The CUDA wrappers and their contract:
// memattn/cuda/think.cuh.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "memattn/core/status.hpp"
#include "memattn/kernels/think_decode.cuh"
#include "memattn/kernels/think_decode_lanes.cuh"
#include "memattn/kernels/think_decode_mma.cuh"
#include "memattn/kernels/think_decode_mma16.cuh"

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
  if (p.path < 0 || p.path > 4 || (p.mma_cp_async != 0 && p.mma_cp_async != 1) ||
      (p.mma_unpaired != 0 && p.mma_unpaired != 1))
    return Status::kErrorInvalidArgument;
  if (p.rec_block_bytes != 0) return Status::kErrorInvalidArgument;  // KIVI cache records: cuda::kivi_decode
  if (p.scores != nullptr && (p.scores_row_stride < 1 || p.scores_seg_stride < static_cast<long long>(p.q_heads / p.kv_heads) * p.scores_row_stride))
    return Status::kErrorInvalidArgument;
  return Status::kSuccess;
}

namespace think_detail {

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

// The tensor-core kernel reads the KIVI region in 16-byte pieces staged per warp: head_dim 64 /
// 128, 2- / 4-bit codes, d_keep a multiple of 8 (code rows of whole 16-/32-bit pieces), v_group a
// multiple of 32 (a 32-channel value unit in one group; dividing head_dim, so a power of two, which
// the kernel divides by with shifts), K code blocks, K meta and V code rows at
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

// The fp16 tensor-core kernel (path 4) reads what the lane-group kernel reads (padded old rows
// included) at head_dim 64 / 128, and the value extension's compact old values (rows of whole
// 16-byte pieces; not with a KIVI region); a KIVI region goes to the tensor-core kernel of path 3.
inline bool mma16_layout(const kernels::ThinKDecodeParams& p) {
  if (p.head_dim != 64 && p.head_dim != 128) return false;
  if (p.v_channels != nullptr) {
    kernels::ThinKDecodeParams full = p;  // the rest of the layout as lanes_layout sees it
    full.v_channels = nullptr;
    return p.n_q == nullptr && p.dv_keep <= p.head_dim && lanes_layout(full);
  }
  return lanes_layout(p) && (p.n_q == nullptr || mma_layout(p));
}

// Auto (path 0): the fp16 tensor-core kernel (path 4) for caches without a KIVI region whose rows
// it reads without padding (d_keep, and dv_keep with the value extension, multiples of 8). H200,
// 2026-11-28, vs the lane-group kernel: ThinK λ 0.4 at B 16 x 64K 838 vs 1040 us, B 16 x 4096 77
// vs 111 us, B 1 x 64K 110 vs 292 us; with vprune 0.4 660 vs 16060 us (the tile kernel).
inline bool mma16_auto(const kernels::ThinKDecodeParams& p) {
  return p.n_q == nullptr && p.d_keep % 8 == 0 && (p.v_channels == nullptr || p.dv_keep % 8 == 0) && mma16_layout(p);
}

// Auto (path 0) in the split-KV call: the tensor-core kernel for long KIVI regions (measured above).
constexpr int kThinKMmaAutoTokens = 4096;
constexpr int kThinKMmaMinSplit = 2048;
inline kernels::ThinKDecodeParams resolve_path(const kernels::ThinKDecodeParams& p, int max_tokens) {
  kernels::ThinKDecodeParams r = p;
  if (p.path == 0 && mma16_auto(p)) r.path = 4;
  else if (p.path == 0 && max_tokens >= kThinKMmaAutoTokens && mma_layout(p)) r.path = 3;
  return r;
}

// Splits per segment for the tensor-core kernel of a KIVI region (path 3, cuda::kivi_decode's
// tensor-core call): one wave of it (think_mma::kMinCtas CTAs per SM), as equal splits that leave
// a partial last wave idle cost its share of a step (9 splits, the earlier ~8 CTAs per SM, are
// 1152 CTAs at B 16 x 8 KV heads: 2.2 waves of 528 slots run in 3).
inline long long mma_wave_splits(long long segments, int sms) {
  return std::max<long long>(1, kernels::think_mma::kMinCtas * static_cast<long long>(sms) / segments);
}

// Splits for segments of at most max_tokens tokens on `sms` SMs: about 8 CTAs per SM, >= 256 tokens
// each (split_keys > 0 forces the split size). Path 4 without a KIVI region: one wave of its
// kernel (think_mma16::ctas_per_sm per SM at most), as equal splits leave a partial last wave idle
// (1152 CTAs in 264 slots at B 16 x 8 KV heads would run 5 waves for 4.4 waves of work); path 3
// likewise (mma_wave_splits).
inline Status plan(const kernels::ThinKDecodeParams& p, int max_tokens, int split_keys, int sms, kernels::ThinKSplit* sp) {
  if (max_tokens < 1 || split_keys < 0) return Status::kErrorInvalidArgument;
  const long long segments = static_cast<long long>(p.batch) * p.kv_heads;
  int keys = split_keys;
  if (keys == 0) {
    if (sms < 1) return Status::kErrorInvalidArgument;
    const bool kivi_region = p.path == 3 || (p.path == 4 && p.n_q != nullptr);
    const long long want = p.path == 4 && p.n_q == nullptr
                               ? std::max<long long>(1, kernels::think_mma16::ctas_per_sm(p.head_dim) * static_cast<long long>(sms) / segments)
                           : kivi_region ? mma_wave_splits(segments, sms)
                                         : std::max<long long>(1, (8LL * sms + segments - 1) / segments);
    keys = static_cast<int>(std::max<long long>(256, (max_tokens + want - 1) / want));
    // the tensor-core kernel's per-split set-up (q, KIVI scales) needs longer splits
    if (kivi_region) keys = std::max(keys, kThinKMmaMinSplit);
  }
  keys = (keys + kernels::kThinKTile - 1) / kernels::kThinKTile * kernels::kThinKTile;
  sp->split_keys = keys;
  sp->splits = (max_tokens + keys - 1) / keys;
  if (sp->splits > 65535) return Status::kErrorInvalidArgument;
  // the KIVI tensor-core kernel's slots, then those of the kernel over the fp16 regions
  if (p.path == 3 || (p.path == 4 && p.n_q != nullptr)) sp->splits *= 2;
  return Status::kSuccess;
}

inline std::size_t workspace_bytes(const kernels::ThinKDecodeParams& p, const kernels::ThinKSplit& sp) {
  if (sp.splits <= 1) return 0;
  const std::size_t rows = static_cast<std::size_t>(sp.splits) * static_cast<std::size_t>(p.batch) *
                           static_cast<std::size_t>(p.q_heads);
  return rows * (static_cast<std::size_t>(p.head_dim) + 2) * sizeof(float);
}

// The split partials in a workspace of workspace_bytes(p, sp) bytes.
inline void carve(const kernels::ThinKDecodeParams& p, void* workspace, std::size_t need, kernels::ThinKSplit* sp) {
  const std::size_t rows = need / ((static_cast<std::size_t>(p.head_dim) + 2) * sizeof(float));
  sp->acc = static_cast<float*>(workspace);
  sp->ml = sp->acc + rows * static_cast<std::size_t>(p.head_dim);
}

// The kernels a call launches, as types: `kernel` is the __global__ function (kernel<<<...>>>
// on the GPU, a plain call under the emulator).
template <int kCh, bool kQuant>
struct TileKernel {
  static constexpr auto kernel = kernels::think_decode_kernel<kCh, kQuant>;
};
template <int D, int R, bool kQuant>
struct LanesKernel {
  static constexpr auto kernel = kernels::think_decode_lanes_kernel<D, R, kQuant>;
};
template <int D, int KB, int VB, int KC, bool kRec = false>
struct MmaKernel {
  static constexpr auto kernel = kernels::think_decode_mma_kernel<D, KB, VB, KC, kRec>;
};
template <int D>
struct Mma16Kernel {
  static constexpr auto kernel = kernels::think_decode_mma16_kernel<D>;
};
struct CombineKernel {
  static constexpr auto kernel = kernels::think_combine_kernel;
};

// launch(kernel type, grid, block, dynamic shared bytes, p, sp) returns the launch's Status.
inline dim3 think_grid(const kernels::ThinKDecodeParams& p, int splits) {
  return dim3(static_cast<unsigned>(p.batch) * static_cast<unsigned>(p.kv_heads), static_cast<unsigned>(splits));
}

template <class Launch>
Status launch_combine(const kernels::ThinKDecodeParams& p, const kernels::ThinKSplit& sp, Launch& launch) {
  if (sp.splits <= 1) return Status::kSuccess;
  return launch(CombineKernel{}, think_grid(p, 1), dim3(kernels::kThinKThreads), 0, p, sp);
}

template <int kCh, bool kQuant, class Launch>
Status launch_ch(const kernels::ThinKDecodeParams& p, const kernels::ThinKSplit& sp, Launch& launch) {
  const int smem = kernels::ThinKSmem(p.head_dim, p.d_keep).bytes(p.q_heads / p.kv_heads);
  MEMATTN_RETURN_IF_ERROR(launch(TileKernel<kCh, kQuant>{}, think_grid(p, sp.splits), dim3(kernels::kThinKThreads), smem, p, sp));
  return launch_combine(p, sp, launch);
}

template <int D, bool kQuant, class Launch>
Status launch_lanes_d(const kernels::ThinKDecodeParams& p, const kernels::ThinKSplit& sp, Launch& launch) {
  const int g = p.q_heads / p.kv_heads;  // rows of the tile: g rounded up to a power of two
  const dim3 grid = think_grid(p, sp.splits - sp.slot0);  // after the tensor-core kernel: the slots above its own
  const dim3 block(kernels::kDecodeThreads);
  Status st;
  if (g == 1) st = launch(LanesKernel<D, 1, kQuant>{}, grid, block, 0, p, sp);
  else if (g == 2) st = launch(LanesKernel<D, 2, kQuant>{}, grid, block, 0, p, sp);
  else if (g <= 4) st = launch(LanesKernel<D, 4, kQuant>{}, grid, block, 0, p, sp);
  else st = launch(LanesKernel<D, 8, kQuant>{}, grid, block, 0, p, sp);
  MEMATTN_RETURN_IF_ERROR(st);
  return launch_combine(p, sp, launch);
}

template <bool kQuant, class Launch>
Status launch_lanes(const kernels::ThinKDecodeParams& p, const kernels::ThinKSplit& sp, Launch& launch) {
  if (p.head_dim == 64) return launch_lanes_d<64, kQuant>(p, sp, launch);
  if (p.head_dim == 128) return launch_lanes_d<128, kQuant>(p, sp, launch);
  return launch_lanes_d<256, kQuant>(p, sp, launch);
}

// The tensor-core kernel over the KIVI region, grid_splits splits (kRec: in KIVI cache records,
// cuda::kivi_decode; every key channel, so one chunk count).
template <int D, bool kRec = false, class Launch>
Status launch_mma_d(const kernels::ThinKDecodeParams& p, const kernels::ThinKSplit& sp, int grid_splits, Launch& launch) {
  auto chunks = [&](auto kc) {
    auto bits = [&](auto kernel_type, int kb, int vb) {
      const int v_row = kRec ? kernels::think_mma::rec_v_row_bytes(D, vb) : D * vb / 8;  // the stage's rows
      const kernels::think_mma::StageGeom geo = kernels::think_mma::stage_geom(p.d_keep, kb, v_row, D);
      return launch(kernel_type, think_grid(p, grid_splits), dim3(kernels::think_mma::kThreads), kernels::think_mma::smem_bytes(geo, D), p, sp);
    };
    constexpr int KC = decltype(kc)::value;
    if (p.bits_k == 2) return p.bits_v == 2 ? bits(MmaKernel<D, 2, 2, KC, kRec>{}, 2, 2) : bits(MmaKernel<D, 2, 4, KC, kRec>{}, 2, 4);
    return p.bits_v == 2 ? bits(MmaKernel<D, 4, 2, KC, kRec>{}, 4, 2) : bits(MmaKernel<D, 4, 4, KC, kRec>{}, 4, 4);
  };
  if constexpr (kRec) return chunks(std::integral_constant<int, D / 32>{});
  else return kernels::with_mma_chunks<D>(p.d_keep, chunks);
}

// Path 3: sp.splits = 2 * N partial slots, N = grid splits of each kernel; the tensor-core kernel
// fills slots [0, N) from the KIVI region, the lane-group kernel slots [N, 2N) from the fp16
// regions, then the combine merges all.
template <class Launch>
Status launch_mma(const kernels::ThinKDecodeParams& p, const kernels::ThinKSplit& sp, Launch& launch) {
  const int n = sp.splits / 2;
  MEMATTN_RETURN_IF_ERROR(p.head_dim == 64 ? launch_mma_d<64>(p, sp, n, launch) : launch_mma_d<128>(p, sp, n, launch));
  kernels::ThinKSplit rest = sp;
  rest.after_quantised = true;
  rest.slot0 = n;
  return launch_lanes<true>(p, rest, launch);
}

// Path 4: the fp16 regions on tensor cores (slots from sp.slot0), after the KIVI region's kernel
// when there is one (as in path 3).
template <class Launch>
Status launch_mma16(const kernels::ThinKDecodeParams& p, const kernels::ThinKSplit& sp, Launch& launch) {
  kernels::ThinKSplit rest = sp;
  if (p.n_q != nullptr) {
    rest.slot0 = sp.splits / 2;
    MEMATTN_RETURN_IF_ERROR(p.head_dim == 64 ? launch_mma_d<64>(p, sp, rest.slot0, launch) : launch_mma_d<128>(p, sp, rest.slot0, launch));
  }
  const dim3 grid = think_grid(p, sp.splits - rest.slot0), block(kernels::think_mma::kThreads);
  const int smem = kernels::think_mma16::smem_bytes(p.head_dim, p.v_channels != nullptr);
  MEMATTN_RETURN_IF_ERROR(p.head_dim == 64 ? launch(Mma16Kernel<64>{}, grid, block, smem, p, rest)
                                           : launch(Mma16Kernel<128>{}, grid, block, smem, p, rest));
  return launch_combine(p, sp, launch);
}

// The kernels of a checked, planned call (p.path resolved), in order.
template <class Launch>
Status think_launches(const kernels::ThinKDecodeParams& p, const kernels::ThinKSplit& sp, Launch&& launch) {
  if (p.path == 3) {
    if (!mma_layout(p) || sp.splits < 2) return Status::kErrorNotSupported;
    return launch_mma(p, sp, launch);
  }
  if (p.path == 4) {
    if (!mma16_layout(p) || (p.n_q != nullptr && sp.splits < 2)) return Status::kErrorNotSupported;
    return launch_mma16(p, sp, launch);
  }
  // auto: only where no row holds padding (d_keep a multiple of 8), whose values the lane-group
  // kernel reads (times q = 0: garbage there would turn into NaN); path 2 accepts padded rows.
  const bool lanes = p.path == 2 || (p.path == 0 && p.d_keep % 8 == 0 && lanes_layout(p));
  if (lanes) {
    if (!lanes_layout(p)) return Status::kErrorNotSupported;
    return p.n_q != nullptr ? launch_lanes<true>(p, sp, launch) : launch_lanes<false>(p, sp, launch);
  }
  const bool narrow = p.head_dim <= kernels::kThinKThreads;
  if (p.n_q != nullptr) return narrow ? launch_ch<1, true>(p, sp, launch) : launch_ch<2, true>(p, sp, launch);
  return narrow ? launch_ch<1, false>(p, sp, launch) : launch_ch<2, false>(p, sp, launch);
}

}  // namespace think_detail
}  // namespace cuda
MEMATTN_NAMESPACE_END
