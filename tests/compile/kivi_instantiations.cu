// Compile check: the KIVI append and fused decode kernels and their host wrappers (the split-KV
// call's tensor-core kernel over KIVI records included), built to real SASS for each architecture
// in CMAKE_CUDA_ARCHITECTURES. compile.kivi_cubins checks the cubins.
#include <cstdio>

#include "memattn/cuda/kivi.cuh"

namespace mk = memattn::kernels;
template __global__ void mk::kivi_append_decode_kernel<128>(const mk::KiviAppendParams);
template __global__ void mk::kivi_decode_kernel<128>(const mk::KiviDecodeParams);

// the split-KV call's launch sequence, every instance it can take
[[maybe_unused]] memattn::Status split_call(const mk::KiviCacheView& v, void* ws, std::size_t bytes) {
  return memattn::cuda::kivi_decode(v, nullptr, nullptr, nullptr, 1, 1, 1 << 16, ws, bytes, nullptr);
}

int main() {
  // Argument checks run without a device: an invalid config is rejected before any launch.
  mk::KiviCacheView v{};
  v.cfg.head_dim = 64;
  v.cfg.bits_k = 3;
  const memattn::Status s = memattn::cuda::kivi_decode(v, nullptr, nullptr, nullptr, 1, 1, nullptr);
  if (s != memattn::Status::kErrorInvalidArgument) {
    std::printf("unexpected status %s\n", memattn::status_message(s));
    return 1;
  }
  std::size_t bytes = 0;
  const memattn::Status w = memattn::cuda::kivi_decode_workspace_size(v, 1, 1, 1 << 16, &bytes);
  if (w != memattn::Status::kErrorInvalidArgument) {
    std::printf("unexpected workspace status %s\n", memattn::status_message(w));
    return 1;
  }
  std::printf("kivi instantiations: ok\n");
  return 0;
}
