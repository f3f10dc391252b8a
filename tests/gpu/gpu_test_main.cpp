// Catch2 main for the GPU tests: exits 77 (ctest SKIP_RETURN_CODE) before Catch runs when no CUDA
// device is usable, so a machine without a GPU reports the tests as skipped, not failed (Catch
// itself is in tests/catch_impl.cpp).
#include "common/catch_run.hpp"
#include <cuda_runtime_api.h>

#include <cstdio>

int main(int argc, char* argv[]) {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess || count <= 0) {
    std::printf("no CUDA device (%s): skipping\n", e != cudaSuccess ? cudaGetErrorString(e) : "0 devices");
    return 77;
  }
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
    std::printf("device 0: %s, sm_%d%d, %d SMs\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
  }
  return memattn_test::run_catch(argc, argv);
}
