// Compile check: every dense decode kernel instantiation (head_dim 64/128/256 x fp16/bf16 x row
// tile 1/2/4/8, and the merge kernels) plus the host wrappers for every dtype, built to real SASS
// for each architecture in CMAKE_CUDA_ARCHITECTURES (80-real;90-real by default). The ctest test
// compile.dense_decode_cubins then checks that the binary carries a cubin for each of them.
#include <cstdio>

#include "memattn/cuda/dense_decode.cuh"

namespace mk = memattn::kernels;
namespace mc = memattn::cuda;
using memattn::BFloat16;
using memattn::Half;

#define MEMATTN_INSTANTIATE_SPLIT(T, D, R) \
  template __global__ void mk::dense_decode_split_kernel<T, D, R>(const mk::DenseDecodeParams);
#define MEMATTN_INSTANTIATE_D(T, D)    \
  MEMATTN_INSTANTIATE_SPLIT(T, D, 1)   \
  MEMATTN_INSTANTIATE_SPLIT(T, D, 2)   \
  MEMATTN_INSTANTIATE_SPLIT(T, D, 4)   \
  MEMATTN_INSTANTIATE_SPLIT(T, D, 8)   \
  template __global__ void mk::dense_decode_merge_kernel<T, D>(const mk::DenseDecodeParams);
#define MEMATTN_INSTANTIATE_T(T) \
  MEMATTN_INSTANTIATE_D(T, 64)   \
  MEMATTN_INSTANTIATE_D(T, 128)  \
  MEMATTN_INSTANTIATE_D(T, 256)

MEMATTN_INSTANTIATE_T(Half)
MEMATTN_INSTANTIATE_T(BFloat16)

// Host wrappers (fp32 compiles too and reports kErrorUnsupportedDtype).
#define MEMATTN_INSTANTIATE_HOST(T)                                                                            \
  template memattn::Status mc::dense_decode<T>(const memattn::attention::DecodeArgs<T>&, void*, std::size_t,   \
                                               cudaStream_t);                                                   \
  template memattn::Status mc::dense_decode<T>(const memattn::attention::DecodeArgs<T>&, void*, std::size_t,   \
                                               cudaStream_t, const mc::DenseDecodeTuning&);                     \
  template memattn::Status mc::dense_decode_workspace_size<T>(const memattn::attention::DecodeArgs<T>&,         \
                                                              std::size_t*);                                    \
  template memattn::Status mc::dense_decode_plan<T>(const memattn::attention::DecodeArgs<T>&,                   \
                                                    mc::DenseDecodePlan*, const mc::DenseDecodeTuning&);

MEMATTN_INSTANTIATE_HOST(Half)
MEMATTN_INSTANTIATE_HOST(BFloat16)
MEMATTN_INSTANTIATE_HOST(float)

// Prints each instantiation's static configuration (no device needed).
int main() {
#define MEMATTN_PRINT(D, R)                                                                                   \
  std::printf("D=%3d R=%d: lanes/key=%2d groups=%2d unroll=%d chunk=%3d stages=%d smem=%5d B\n", D, R,          \
              mk::DenseDecodeConfig<D, R>::kLanes, mk::DenseDecodeConfig<D, R>::kGroups,                        \
              mk::DenseDecodeConfig<D, R>::kUnroll, mk::DenseDecodeConfig<D, R>::kChunk,                        \
              mk::DenseDecodeConfig<D, R>::kStages, mk::DenseDecodeConfig<D, R>::kSmemBytes);
  MEMATTN_PRINT(64, 1) MEMATTN_PRINT(64, 2) MEMATTN_PRINT(64, 4) MEMATTN_PRINT(64, 8)
  MEMATTN_PRINT(128, 1) MEMATTN_PRINT(128, 2) MEMATTN_PRINT(128, 4) MEMATTN_PRINT(128, 8)
  MEMATTN_PRINT(256, 1) MEMATTN_PRINT(256, 2) MEMATTN_PRINT(256, 4) MEMATTN_PRINT(256, 8)
  return 0;
}
