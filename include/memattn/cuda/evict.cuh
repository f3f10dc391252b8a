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
// Both copy rows in 16-byte words where the row size and pointers allow (see evict_detail).
// Stream-ordered, no allocation, no synchronisation (CUDA-graph capturable).
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

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

// True when the select kernel may read 4 slots per thread with 16-byte loads: every segment of
// scores and positions starts 16-byte aligned.
inline bool evict_select_vec4(const kernels::EvictSelectParams& p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p.scores) | reinterpret_cast<std::uintptr_t>(p.pos);
  return p.stride % 4 == 0 && a % 16 == 0;
}

inline Status evict_select(const kernels::EvictSelectParams& p, cudaStream_t stream) {
  MEMATTN_RETURN_IF_ERROR(evict_select_can_implement(p));
  constexpr int kT = kernels::kEvictSelectThreads;
  if (evict_select_vec4(p)) kernels::evict_select_kernel<kT, 4><<<p.segments, kT, 0, stream>>>(p);
  else kernels::evict_select_kernel<kT, 1><<<p.segments, kT, 0, stream>>>(p);
  return launch_status();
}

namespace evict_detail {

// Rows of `row_bytes` bytes are copied as words of the widest of 16/8/4/2/1 bytes that divides the
// row and both base pointers' alignment (16 B for fp16/bf16 K/V rows of head_dim >= 8); lanes per
// row: the next power of two of the words per row, at most 32.
struct RowCopy {
  int word = 1, words = 0, lanes_log2 = 0;
};
inline RowCopy row_copy(std::size_t row_bytes, const void* a, const void* b) {
  const auto align = static_cast<std::size_t>(reinterpret_cast<std::uintptr_t>(a) | reinterpret_cast<std::uintptr_t>(b));
  RowCopy rc;
  for (int w = 16; w > 1; w /= 2) {
    if (row_bytes % static_cast<std::size_t>(w) == 0 && align % static_cast<std::size_t>(w) == 0) {
      rc.word = w;
      break;
    }
  }
  rc.words = static_cast<int>(row_bytes / static_cast<std::size_t>(rc.word));
  while (rc.lanes_log2 < 5 && (1 << rc.lanes_log2) < rc.words) ++rc.lanes_log2;
  return rc;
}

// Calls launch(V*) with V the unsigned type of `word` bytes (uint4 for 16).
template <class Launch>
void dispatch_word(int word, Launch&& launch) {
  switch (word) {
    case 16: launch(static_cast<uint4*>(nullptr)); break;
    case 8: launch(static_cast<uint2*>(nullptr)); break;
    case 4: launch(static_cast<std::uint32_t*>(nullptr)); break;
    case 2: launch(static_cast<std::uint16_t*>(nullptr)); break;
    default: launch(static_cast<std::uint8_t*>(nullptr)); break;
  }
}

inline dim3 row_grid(std::int64_t rows, int lanes_log2, int segments) {
  const std::int64_t rows_per_block = 256 >> lanes_log2;
  const std::int64_t blocks = std::min<std::int64_t>((rows + rows_per_block - 1) / rows_per_block, 1024);
  return dim3(static_cast<unsigned>(std::max<std::int64_t>(blocks, 1)), static_cast<unsigned>(segments));
}

}  // namespace evict_detail

template <class T>
Status evict_gather(const T* src, std::int64_t src_rows, T* dst, std::int64_t dst_rows, int row_elems, int segments,
                    const std::int32_t* keep, std::int64_t keep_stride, const std::int32_t* keep_count,
                    cudaStream_t stream) {
  if (src == nullptr || dst == nullptr || keep == nullptr || keep_count == nullptr) return Status::kErrorNullPointer;
  if (segments <= 0 || row_elems <= 0 || src_rows <= 0 || dst_rows <= 0 || keep_stride <= 0 ||
      dst_rows > (std::int64_t{1} << 31) - 1)
    return Status::kErrorInvalidShape;
  if (static_cast<const void*>(src) == static_cast<const void*>(dst)) return Status::kErrorInvalidArgument;
  const evict_detail::RowCopy rc = evict_detail::row_copy(sizeof(T) * static_cast<std::size_t>(row_elems), src, dst);
  const dim3 grid = evict_detail::row_grid(dst_rows, rc.lanes_log2, segments);
  evict_detail::dispatch_word(rc.word, [&](auto* tag) {
    using V = std::remove_pointer_t<decltype(tag)>;
    kernels::evict_gather_kernel<V><<<grid, 256, 0, stream>>>(reinterpret_cast<const V*>(src), src_rows,
                                                               reinterpret_cast<V*>(dst), dst_rows, rc.words,
                                                               rc.lanes_log2, keep, keep_stride, keep_count);
  });
  return launch_status();
}

template <class T>
Status evict_fill_holes(T* data, std::int64_t rows, int row_elems, int segments, const std::int32_t* keep,
                        std::int64_t keep_stride, const std::int32_t* keep_count, cudaStream_t stream,
                        std::int64_t max_holes = -1) {
  if (data == nullptr || keep == nullptr || keep_count == nullptr) return Status::kErrorNullPointer;
  if (segments <= 0 || row_elems <= 0 || rows <= 0 || keep_stride <= 0 || rows > (std::int64_t{1} << 31) - 1)
    return Status::kErrorInvalidShape;
  const evict_detail::RowCopy rc = evict_detail::row_copy(sizeof(T) * static_cast<std::size_t>(row_elems), data, data);
  // max_holes (host hint, e.g. the chunk size at decode: one hole per token over budget) sizes the
  // grid; the kernel reads the real count per segment.
  const std::int64_t holes = max_holes > 0 && max_holes < rows ? max_holes : rows;
  const dim3 grid = evict_detail::row_grid(holes, rc.lanes_log2, segments);
  evict_detail::dispatch_word(rc.word, [&](auto* tag) {
    using V = std::remove_pointer_t<decltype(tag)>;
    kernels::evict_fill_holes_kernel<V><<<grid, 256, 0, stream>>>(reinterpret_cast<V*>(data), rows, rc.words,
                                                                   rc.lanes_log2, keep, keep_stride, keep_count);
  });
  return launch_status();
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
