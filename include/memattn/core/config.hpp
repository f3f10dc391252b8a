// Build configuration shared by every memattn header: version, namespaces, host/device markers.
#pragma once

#define MEMATTN_VERSION_MAJOR 0
#define MEMATTN_VERSION_MINOR 1
#define MEMATTN_VERSION_PATCH 0

// Every symbol lives in a versioned inline namespace, so two libraries that embed different
// memattn builds link into one process without ODR clashes (the inline namespace is part of
// the mangled name but invisible to users, who write memattn::...).
#define MEMATTN_NAMESPACE_BEGIN \
  namespace memattn {           \
  inline namespace v0_1 {
#define MEMATTN_NAMESPACE_END \
  }                           \
  }

#if defined(__CUDACC__) || defined(__HIPCC__)
#define MEMATTN_HOST_DEVICE __host__ __device__ __forceinline__
#define MEMATTN_DEVICE __device__ __forceinline__
#else
#define MEMATTN_HOST_DEVICE inline
#define MEMATTN_DEVICE inline
#endif

// Kernels get hidden visibility: a __global__ symbol from one embedding shared library must
// never bind to another's copy.
#if defined(_WIN32)
#define MEMATTN_HIDDEN
#else
#define MEMATTN_HIDDEN __attribute__((visibility("hidden")))
#endif
#define MEMATTN_KERNEL __global__ MEMATTN_HIDDEN

// A kernel's dynamic shared memory as `T name[]` (16-byte aligned). tests/emu/simt.hpp, the CPU
// emulator that runs kernels in CI, defines it first.
#ifndef MEMATTN_DYNAMIC_SMEM
#define MEMATTN_DYNAMIC_SMEM(T, name) extern __shared__ __align__(16) T name[]
#endif
// A kernel's static shared variable `T name dims` (dims: array extents or nothing). The emulator
// defines it too, to give every CTA the variable filled with 0xFF bytes.
#ifndef MEMATTN_SHARED
#define MEMATTN_SHARED(T, name, dims) __shared__ T name dims
#endif

#if defined(__CUDA_ARCH__)
#define MEMATTN_DEVICE_COMPILE 1
#else
#define MEMATTN_DEVICE_COMPILE 0
#endif
