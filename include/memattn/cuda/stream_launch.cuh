// The CUDA wrappers' launcher for the launch sequences of the *_params.cuh headers, which call
// launch(KernelRef<kernel>{}, grid, block, dynamic smem bytes, args...) (tests/emu passes the CPU
// emulator's instead).
#pragma once

#include <cuda_runtime.h>

#include "memattn/core/status.hpp"
#include "memattn/cuda/runtime.cuh"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

// kernel<<<grid, block, smem, stream>>>(args...), opted into more than 48 KiB of dynamic shared
// memory first where smem needs it; returns the launch's Status.
inline auto stream_launch(cudaStream_t stream) {
  return [stream](auto kernel, dim3 grid, dim3 block, int smem, const auto&... args) {
    MEMATTN_RETURN_IF_ERROR(allow_dynamic_smem(decltype(kernel)::kernel, smem));
    decltype(kernel)::kernel<<<grid, block, smem, stream>>>(args...);
    return launch_status();
  };
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
