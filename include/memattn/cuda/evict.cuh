// Host wrappers of the token-eviction selection and compaction kernels (spec eviction.md §5).
//   evict_select(params, stream)   per-segment deterministic top-k (64-bit keys), kept slots ascending;
//                                  identical keep lists to cpu::select_keep. Invalid per-segment
//                                  input (NaN candidate score, budget < 1, len > stride) sets
//                                  *params.error = 1 and keep_count = -1 for that segment; nothing
//                                  is written to its keep row.
//   evict_gather(...)              out-of-place compaction of one per-slot array (K, V, pos, state).
//   evict_fill_holes(...)          in-place hole filling of one per-slot array (§5.5 slot
//                                  replacement; cpu::fill_holes): moves count - (kept slots below
//                                  count) rows per segment, one per token over budget at decode
//                                  (pass that bound as max_holes to size the grid).
// Both copy rows in 16-byte words where the row size and pointers allow (see evict_detail;
// checks and launch sequences: memattn/cuda/evict_params.cuh).
// Stream-ordered, no allocation, no synchronisation (CUDA-graph capturable).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "memattn/core/status.hpp"
#include "memattn/cuda/evict_params.cuh"
#include "memattn/cuda/stream_launch.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

inline Status evict_select(const kernels::EvictSelectParams& p, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(evict_select_can_implement(p));
  return evict_select_launch(p, stream_launch(stream));
}

template <class T>
Status evict_gather(const T* src, std::int64_t src_rows, T* dst, std::int64_t dst_rows, int row_elems, int segments,
                    const std::int32_t* keep, std::int64_t keep_stride, const std::int32_t* keep_count,
                    cudaStream_t stream) {
  return evict_gather_launch(src, src_rows, dst, dst_rows, row_elems, segments, keep, keep_stride, keep_count,
                             stream_launch(stream));
}

template <class T>
Status evict_fill_holes(T* data, std::int64_t rows, int row_elems, int segments, const std::int32_t* keep,
                        std::int64_t keep_stride, const std::int32_t* keep_count, cudaStream_t stream,
                        std::int64_t max_holes = -1) {
  return evict_fill_holes_launch(data, rows, row_elems, segments, keep, keep_stride, keep_count, max_holes,
                                 stream_launch(stream));
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
