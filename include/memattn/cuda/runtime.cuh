// CUDA runtime helpers shared by the memattn::cuda wrappers: error -> Status, device queries.
// Nothing here allocates, synchronises or keeps state.
#pragma once

#include <cuda_runtime.h>

#include "memattn/core/config.hpp"
#include "memattn/core/status.hpp"

MEMATTN_NAMESPACE_BEGIN
namespace cuda {

// Maps a CUDA runtime error to a Status (cudaSuccess -> kSuccess).
inline Status status_from(cudaError_t e) noexcept {
  switch (e) {
    case cudaSuccess: return Status::kSuccess;
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver: return Status::kErrorNoDevice;
    case cudaErrorMemoryAllocation: return Status::kErrorOutOfMemory;
    default: return Status::kErrorCudaRuntime;
  }
}

// Status of the last kernel launch on this host thread (consumes the runtime's last error, as
// cudaGetLastError does). Any launch failure (bad configuration, no kernel image for the device,
// too many resources requested) is reported as kErrorCudaRuntime.
inline Status launch_status() noexcept {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return Status::kSuccess;
  return e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver ? Status::kErrorNoDevice
                                                                    : Status::kErrorCudaRuntime;
}

// True when at least one CUDA device is usable (driver present and a device found).
inline bool device_available() noexcept {
  int n = 0;
  const cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();  // don't leave the failure as this thread's last error
    return false;
  }
  return n > 0;
}

// The calling thread's current device.
inline Status current_device(int* device) noexcept {
  if (device == nullptr) return Status::kErrorNullPointer;
  return status_from(cudaGetDevice(device));
}

// A __global__ function as a type. The launch sequences of the *_params.cuh headers call a
// caller-given launch(KernelRef<k>{}, grid, block, dynamic smem bytes, args...): the CUDA
// wrappers launch decltype(ref)::kernel on their stream, tests/emu runs it on the CPU emulator.
// A kernel template specialisation that does not depend on the caller's template parameters is
// named through a constexpr variable first: GCC (12) does not instantiate a function template
// named only in a non-dependent template argument (the host-compiled emulator build fails to link).
template <auto K>
struct KernelRef {
  static constexpr auto kernel = K;
};

// Number of streaming multiprocessors of `device` (-1: the current device).
// Opts a kernel into more than 48 KB of dynamic shared memory when `bytes` needs it.
template <class Kernel>
Status allow_dynamic_smem(Kernel* kernel, int bytes) noexcept {
  if (bytes <= 48 * 1024) return Status::kSuccess;
  const cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return Status::kErrorCudaRuntime;
  }
  return Status::kSuccess;
}

inline Status sm_count(int* count, int device = -1) noexcept {
  if (count == nullptr) return Status::kErrorNullPointer;
  if (device < 0) MEMATTN_RETURN_IF_ERROR(current_device(&device));
  int n = 0;
  MEMATTN_RETURN_IF_ERROR(status_from(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device)));
  if (n <= 0) return Status::kErrorCudaRuntime;
  *count = n;
  return Status::kSuccess;
}

}  // namespace cuda
MEMATTN_NAMESPACE_END
