// Compile check: the token-merging kernels (D2O nearest-cosine, KVMerger sets + Gaussian merge)
// and their host wrappers, real SASS for each architecture in CMAKE_CUDA_ARCHITECTURES.
#include <cstdio>

#include "memattn/core/dtype.hpp"
#include "memattn/cuda/evict_merge.cuh"

namespace mk = memattn::kernels;
template __global__ void mk::evict_nearest_cos_kernel<memattn::Half>(const mk::EvictNearestCosParams<memattn::Half>);
template __global__ void mk::evict_nearest_cos_kernel<float>(const mk::EvictNearestCosParams<float>);
template __global__ void mk::evict_consecutive_sets_kernel<memattn::Half>(
    const mk::EvictConsecutiveSetsParams<memattn::Half>);
template __global__ void mk::evict_consecutive_sets_kernel<float>(const mk::EvictConsecutiveSetsParams<float>);
template __global__ void mk::evict_gaussian_merge_kernel<memattn::Half, float>(
    const mk::EvictGaussianMergeParams<memattn::Half, float>);
template __global__ void mk::evict_gaussian_merge_kernel<float, float>(const mk::EvictGaussianMergeParams<float, float>);

int main() {
  // Argument checks run without a device: invalid arguments are rejected before any launch.
  mk::EvictNearestCosParams<memattn::Half> a{};
  mk::EvictConsecutiveSetsParams<memattn::Half> b{};
  mk::EvictGaussianMergeParams<memattn::Half, float> c{};
  if (memattn::cuda::evict_nearest_cos(a, nullptr) != memattn::Status::kErrorNullPointer ||
      memattn::cuda::evict_consecutive_sets(b, nullptr) != memattn::Status::kErrorNullPointer ||
      memattn::cuda::evict_gaussian_merge(c, nullptr) != memattn::Status::kErrorNullPointer) {
    std::printf("unexpected status for null pointers\n");
    return 1;
  }
  std::printf("evict merge instantiations: ok\n");
  return 0;
}
