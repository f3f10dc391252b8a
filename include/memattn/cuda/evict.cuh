// Host wrappers of the token-eviction selection and compaction kernels (spec eviction.md §5).
//   evict_select(params, stream)   per-segment deterministic top-k (64-bit keys), kept slots ascending;
//                                  identical keep lists to cpu::select_keep. Invalid per-segment
//                                  input (NaN candidate score, budget < 1, len > stride) sets
//                                  *params.error = 1 and keep_count = -1 for that segment; nothing
//                                  is written to its keep row.
//   evict_gather(...)              out-of-place compaction of one per-slot array (K, V, pos, state).
//   evict_fill_holes(...)          in-place hole filling of one per-slot array (§5.5 slot
//                                  replacement; cpu::fill_holes): moves count - (kept slots below
//                                  count) rows per segment, one per token over budget at decode.
// Stream-ordered, no allocation, no synchronisation (CUDA-graph capturable).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "memattn/core/status.hpp"
#include "memattn/cuda/runtime.cuh"
#include "memattn/kernels/evict_select.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

inline Status evict_select_can_implement(const kernels::EvictSelectParams& p) {
  if (p.scores == nullptr || p.pos == nullptr || p.len == nullptr || p.budget == nullptr || p.t_cur == nullptr ||
      p.keep == nullptr || p.keep_count == nullptr || p.error == nullptr)
    return Status::kErrorNullPointer;
  if (p.segments <= 0 || p.stride <= 0 || p.stride > (std::int64_t{1} << 31) - 1) return Status::kErrorInvalidShape;
  if (p.protect.n_sink < 0 || p.protect.n_recent < 0) return Status::kErrorInvalidArgument;
  return Status::kSuccess;
}

inline Status evict_select(const kernels::EvictSelectParams& p, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(evict_select_can_implement(p));
  kernels::evict_select_kernel<kernels::kEvictSelectThreads>
      <<<p.segments, kernels::kEvictSelectThreads, 0, stream>>>(p);
  return launch_status();
}

template <class T>
Status evict_gather(const T* src, std::int64_t src_rows, T* dst, std::int64_t dst_rows, int row_elems, int segments,
                    const std::int32_t* keep, std::int64_t keep_stride, const std::int32_t* keep_count,
                    cudaStream_t stream) {
  if (src == nullptr || dst == nullptr || keep == nullptr || keep_count == nullptr) return Status::kErrorNullPointer;
  if (segments <= 0 || row_elems <= 0 || src_rows <= 0 || dst_rows <= 0 || keep_stride <= 0)
    return Status::kErrorInvalidShape;
  if (static_cast<const void*>(src) == static_cast<const void*>(dst)) return Status::kErrorInvalidArgument;
  const std::int64_t work = dst_rows * row_elems;
  const unsigned blocks = static_cast<unsigned>(std::min<std::int64_t>((work + 255) / 256, 1024));
  kernels::evict_gather_kernel<T><<<dim3(blocks, static_cast<unsigned>(segments)), 256, 0, stream>>>(
      src, src_rows, dst, dst_rows, row_elems, keep, keep_stride, keep_count);
  return launch_status();
}

template <class T>
Status evict_fill_holes(T* data, std::int64_t rows, int row_elems, int segments, const std::int32_t* keep,
                        std::int64_t keep_stride, const std::int32_t* keep_count, cudaStream_t stream) {
  if (data == nullptr || keep == nullptr || keep_count == nullptr) return Status::kErrorNullPointer;
  if (segments <= 0 || row_elems <= 0 || rows <= 0 || keep_stride <= 0 || rows > (std::int64_t{1} << 31) - 1)
    return Status::kErrorInvalidShape;
  // Work per segment is (holes x row_elems); decode has one hole, so size the grid by one row's
  // elements and let the grid-stride loop cover larger chunks.
  const unsigned blocks = static_cast<unsigned>(std::min<std::int64_t>((row_elems + 255) / 256 * 4, 1024));
  kernels::evict_fill_holes_kernel<T><<<dim3(blocks, static_cast<unsigned>(segments)), 256, 0, stream>>>(
      data, rows, row_elems, keep, keep_stride, keep_count);
  return launch_status();
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
