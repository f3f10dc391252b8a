// Compile check: the eviction selection, gather and hole-filling kernels and their host wrappers, built to real
// SASS for each architecture in CMAKE_CUDA_ARCHITECTURES. compile.evict_cubins checks the cubins.
#include <cstdio>

#include "memattn/core/dtype.hpp"
#include "memattn/cuda/evict.cuh"
#include "memattn/cuda/evict_recurrence.cuh"  // issue 6: LazyEviction per-step update/score

namespace mk = memattn::kernels;
template __global__ void mk::evict_select_kernel<mk::kEvictSelectThreads, 1>(const mk::EvictSelectParams);
template __global__ void mk::evict_select_kernel<mk::kEvictSelectThreads, 4>(const mk::EvictSelectParams);
// Gather and hole filling copy rows in words of 16/8/4/2/1 bytes (cuda/evict.cuh picks one).
template __global__ void mk::evict_gather_kernel<uint4>(const uint4*, std::int64_t, uint4*, std::int64_t, int, int,
                                                        const std::int32_t*, std::int64_t, const std::int32_t*);
template __global__ void mk::evict_gather_kernel<std::uint32_t>(const std::uint32_t*, std::int64_t, std::uint32_t*,
                                                                std::int64_t, int, int, const std::int32_t*,
                                                                std::int64_t, const std::int32_t*);
template __global__ void mk::evict_fill_holes_kernel<uint4>(uint4*, std::int64_t, int, int, const std::int32_t*,
                                                            std::int64_t, const std::int32_t*);
template __global__ void mk::evict_fill_holes_kernel<std::uint16_t>(std::uint16_t*, std::int64_t, int, int,
                                                                    const std::int32_t*, std::int64_t,
                                                                    const std::int32_t*);
// Host wrappers for the element types the caches use (every word width gets instantiated).
template memattn::Status memattn::cuda::evict_gather<memattn::Half>(const memattn::Half*, std::int64_t, memattn::Half*,
                                                                    std::int64_t, int, int, const std::int32_t*,
                                                                    std::int64_t, const std::int32_t*, cudaStream_t);
template memattn::Status memattn::cuda::evict_fill_holes<float>(float*, std::int64_t, int, int, const std::int32_t*,
                                                                std::int64_t, const std::int32_t*, cudaStream_t,
                                                                std::int64_t);
template __global__ void mk::recurrence_update_kernel<mk::kRecurrenceThreads>(const mk::RecurrenceParams);
template __global__ void mk::recurrence_score_kernel<mk::kRecurrenceThreads>(const mk::RecurrenceParams);

int main() {
  // Argument checks run without a device: invalid arguments are rejected before any launch.
  mk::EvictSelectParams p{};
  if (memattn::cuda::evict_select(p, nullptr) != memattn::Status::kErrorNullPointer) {
    std::printf("unexpected status for null pointers\n");
    return 1;
  }
  mk::RecurrenceParams rp{};
  if (memattn::cuda::recurrence_update(rp, nullptr) != memattn::Status::kErrorNullPointer) {
    std::printf("unexpected status for null recurrence pointers\n");
    return 1;
  }
  std::printf("evict instantiations: ok\n");
  return 0;
}
