// Compile check: every linear-attention kernel instantiation (prefill, decode and its z writes for
// bf16/fp16 x {identity, elu+1, relu} x Dk {64, 128} and Taylor Dk 16; the scan/segment kernels;
// sliding window, ring store, MoM route/gather/combine) and the host wrappers, built to real SASS
// for each architecture in CMAKE_CUDA_ARCHITECTURES. compile.linear_cubins checks the cubins.
#include <cstdio>

#include "memattn/cuda/linear_attention.cuh"

namespace mk = memattn::kernels;
namespace mc = memattn::cuda;
using memattn::BFloat16;
using memattn::Half;
using memattn::linear::FeatureMap;

#define MEMATTN_LIN_FM(T, FM, D)                                                                   \
  template __global__ void mk::linear_prefill_kernel<T, FM, D>(const mk::LinearPrefillParams); \
  template __global__ void mk::linear_decode_kernel<T, FM, D>(const mk::LinearDecodeParams);   \
  template __global__ void mk::linear_decode_z_kernel<T, FM, D>(const mk::LinearDecodeParams);
#define MEMATTN_LIN_T(T)                           \
  MEMATTN_LIN_FM(T, FeatureMap::kIdentity, 64)     \
  MEMATTN_LIN_FM(T, FeatureMap::kIdentity, 128)    \
  MEMATTN_LIN_FM(T, FeatureMap::kEluPlusOne, 64)   \
  MEMATTN_LIN_FM(T, FeatureMap::kEluPlusOne, 128)  \
  MEMATTN_LIN_FM(T, FeatureMap::kRelu, 64)         \
  MEMATTN_LIN_FM(T, FeatureMap::kRelu, 128)        \
  MEMATTN_LIN_FM(T, FeatureMap::kTaylor2, 16)      \
  template __global__ void mk::sliding_window_kernel<T>(const mk::SlidingWindowParams); \
  template __global__ void mk::ring_store_kernel<T>(const mk::SlidingWindowParams);     \
  template __global__ void mk::mom_combine_kernel<T>(const mk::CombineParams);

MEMATTN_LIN_T(Half)
MEMATTN_LIN_T(BFloat16)

// Host wrappers (fp32 compiles too and reports kErrorUnsupportedDtype).
#define MEMATTN_LIN_HOST(T)                                                                                      \
  template memattn::Status mc::linear_prefill<T>(const memattn::linear::LinearArgs<T>&, void*, std::size_t,      \
                                                 cudaStream_t);                                                  \
  template memattn::Status mc::linear_prefill_workspace_size<T>(const memattn::linear::LinearArgs<T>&,           \
                                                                std::size_t*);                                   \
  template memattn::Status mc::linear_prefill_plan<T>(const memattn::linear::LinearArgs<T>&, mc::LinearPlan*);   \
  template memattn::Status mc::linear_decode<T>(const memattn::linear::LinearArgs<T>&, cudaStream_t);            \
  template memattn::Status mc::sliding_window_attention<T>(const memattn::linear::SlidingWindowArgs<T>&,         \
                                                           cudaStream_t);                                        \
  template memattn::Status mc::based_layer_prefill<T>(const memattn::linear::BasedLayerArgs<T>&, void*,          \
                                                      std::size_t, cudaStream_t);                                \
  template memattn::Status mc::based_layer_decode<T>(const memattn::linear::BasedLayerArgs<T>&, cudaStream_t);   \
  template memattn::Status mc::gather_rows<T>(const memattn::linear::GatherRowsArgs<T>&, cudaStream_t);          \
  template memattn::Status mc::mom_combine<T>(const memattn::linear::MomCombineArgs<T>&, cudaStream_t);

MEMATTN_LIN_HOST(Half)
MEMATTN_LIN_HOST(BFloat16)
MEMATTN_LIN_HOST(float)

// Prints the static configuration of each prefill instantiation (no device needed).
int main() {
#define MEMATTN_LIN_PRINT(FM, D)                                                                          \
  std::printf("%-9s Dk=%3d: Kphi=%3d (pad %3d) state m-tiles/warp=%d prefill smem=%6d B decode smem(G=1)=%5d B\n", \
              memattn::linear::feature_map_name(FM), D, mk::LinearPrefillConfig<FM, D>::kPhi,               \
              mk::LinearPrefillConfig<FM, D>::kPhiPad, mk::LinearPrefillConfig<FM, D>::kMTW,                  \
              mk::LinearPrefillConfig<FM, D>::kSmemBytes, mk::LinearDecodeConfig<FM, D>::smem_bytes(1));
  MEMATTN_LIN_PRINT(FeatureMap::kIdentity, 64)
  MEMATTN_LIN_PRINT(FeatureMap::kIdentity, 128)
  MEMATTN_LIN_PRINT(FeatureMap::kEluPlusOne, 128)
  MEMATTN_LIN_PRINT(FeatureMap::kTaylor2, 16)
  return 0;
}
