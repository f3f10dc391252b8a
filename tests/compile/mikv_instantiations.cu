// Compile check: the MiKV fused mixed decode kernel and its host wrapper, built to real SASS for
// each architecture in CMAKE_CUDA_ARCHITECTURES. compile.mikv_cubins checks the cubins. The one
// kernel holds both Low formats (per-token records and, lo_format = kBlocks, the per-channel blocks
// of `lowk=1`): a runtime branch, so this instantiation builds both paths.
#include <cstdio>

#include "memattn/cuda/mikv.cuh"

namespace mk = memattn::kernels;
template __global__ void mk::mikv_decode_kernel<128>(const mk::MikvDecodeParams);

int main() {
  // Argument checks run without a device: invalid configs are rejected before any launch.
  mk::MikvDecodeParams p{};
  p.lo_cfg = memattn::quant::MixedRowConfig{64, 5, 2};
  p.hi_cfg = memattn::quant::MixedRowConfig{64, 8, 2};
  memattn::Status s = memattn::cuda::mikv_decode(p, nullptr);
  if (s != memattn::Status::kErrorInvalidArgument) {
    std::printf("unexpected status %s\n", memattn::status_message(s));
    return 1;
  }
  p.lo_cfg.bits = 2;
  p.hi_cfg.bits = 4;  // the High tier is INT8
  s = memattn::cuda::mikv_decode(p, nullptr);
  if (s != memattn::Status::kErrorInvalidArgument) {
    std::printf("unexpected status %s\n", memattn::status_message(s));
    return 1;
  }
  p.hi_cfg.bits = 8;
  p.lo_format = static_cast<mk::MikvLowFormat>(2);  // neither kRows nor kBlocks
  s = memattn::cuda::mikv_decode(p, nullptr);
  if (s != memattn::Status::kErrorInvalidArgument) {
    std::printf("unexpected status %s\n", memattn::status_message(s));
    return 1;
  }
  p.lo_format = mk::MikvLowFormat::kBlocks;
  s = memattn::cuda::mikv_decode(p, nullptr);  // null pointers
  if (s != memattn::Status::kErrorNullPointer) {
    std::printf("unexpected status %s\n", memattn::status_message(s));
    return 1;
  }
  std::printf("mikv instantiations: ok\n");
  return 0;
}
