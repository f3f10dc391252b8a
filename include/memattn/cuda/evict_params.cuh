// Host side of the token-eviction selection and compaction apart from the launches (so also
// usable by tests/emu, the CPU emulator that runs the kernels in CI): the argument checks, the
// row-copy plan and the launches over a caller-given launcher
// launch(KernelRef<kernel>{}, grid, block, dynamic smem bytes, args...). The CUDA wrappers and
// their contract: memattn/cuda/evict.cuh.
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

// launch(KernelRef<kernel>{}, grid, block, dynamic smem bytes, params) of a checked call: one
// CTA per segment, 4 slots per thread where evict_select_vec4 allows it.
template <class Launch>
Status evict_select_launch(const kernels::EvictSelectParams& p, Launch&& launch) {
  constexpr int kT = kernels::kEvictSelectThreads;
  constexpr auto vec4 = kernels::evict_select_kernel<kT, 4>;  // constexpr variables: see KernelRef
  constexpr auto vec1 = kernels::evict_select_kernel<kT, 1>;
  if (evict_select_vec4(p)) return launch(KernelRef<vec4>{}, dim3(static_cast<unsigned>(p.segments)), dim3(kT), 0, p);
  return launch(KernelRef<vec1>{}, dim3(static_cast<unsigned>(p.segments)), dim3(kT), 0, p);
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

// evict_gather's checks and launch (rows of `row_elems` T, see evict.cuh).
template <class T, class Launch>
Status evict_gather_launch(const T* src, std::int64_t src_rows, T* dst, std::int64_t dst_rows, int row_elems, int segments,
                           const std::int32_t* keep, std::int64_t keep_stride, const std::int32_t* keep_count, Launch&& launch) {
  if (src == nullptr || dst == nullptr || keep == nullptr || keep_count == nullptr) return Status::kErrorNullPointer;
  if (segments <= 0 || row_elems <= 0 || src_rows <= 0 || dst_rows <= 0 || keep_stride <= 0 ||
      dst_rows > (std::int64_t{1} << 31) - 1)
    return Status::kErrorInvalidShape;
  if (static_cast<const void*>(src) == static_cast<const void*>(dst)) return Status::kErrorInvalidArgument;
  const evict_detail::RowCopy rc = evict_detail::row_copy(sizeof(T) * static_cast<std::size_t>(row_elems), src, dst);
  const dim3 grid = evict_detail::row_grid(dst_rows, rc.lanes_log2, segments);
  Status st = Status::kSuccess;
  evict_detail::dispatch_word(rc.word, [&](auto* tag) {
    using V = std::remove_pointer_t<decltype(tag)>;
    st = launch(KernelRef<kernels::evict_gather_kernel<V>>{}, grid, dim3(256), 0, reinterpret_cast<const V*>(src), src_rows,
                reinterpret_cast<V*>(dst), dst_rows, rc.words, rc.lanes_log2, keep, keep_stride, keep_count);
  });
  return st;
}

// evict_fill_holes's checks and launch (see evict.cuh).
template <class T, class Launch>
Status evict_fill_holes_launch(T* data, std::int64_t rows, int row_elems, int segments, const std::int32_t* keep,
                               std::int64_t keep_stride, const std::int32_t* keep_count, std::int64_t max_holes, Launch&& launch) {
  if (data == nullptr || keep == nullptr || keep_count == nullptr) return Status::kErrorNullPointer;
  if (segments <= 0 || row_elems <= 0 || rows <= 0 || keep_stride <= 0 || rows > (std::int64_t{1} << 31) - 1)
    return Status::kErrorInvalidShape;
  const evict_detail::RowCopy rc = evict_detail::row_copy(sizeof(T) * static_cast<std::size_t>(row_elems), data, data);
  // max_holes (host hint, e.g. the chunk size at decode: one hole per token over budget) sizes the
  // grid; the kernel reads the real count per segment.
  const std::int64_t holes = max_holes > 0 && max_holes < rows ? max_holes : rows;
  const dim3 grid = evict_detail::row_grid(holes, rc.lanes_log2, segments);
  Status st = Status::kSuccess;
  evict_detail::dispatch_word(rc.word, [&](auto* tag) {
    using V = std::remove_pointer_t<decltype(tag)>;
    st = launch(KernelRef<kernels::evict_fill_holes_kernel<V>>{}, grid, dim3(256), 0, reinterpret_cast<V*>(data), rows, rc.words,
                rc.lanes_log2, keep, keep_stride, keep_count);
  });
  return st;
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
