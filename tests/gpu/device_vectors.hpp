// Host vectors to and from device memory for the GPU tests (Catch REQUIRE on every CUDA call).
// upload() of an empty vector still allocates one element, so kernels get a valid pointer.
#pragma once

#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <vector>

namespace memattn_gpu_test {

template <class T>
T* upload(const std::vector<T>& h) {
  void* p = nullptr;
  REQUIRE(cudaMalloc(&p, std::max<std::size_t>(1, h.size()) * sizeof(T)) == cudaSuccess);
  if (!h.empty()) REQUIRE(cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess);
  return static_cast<T*>(p);
}

template <class T>
std::vector<T> download(const T* d, std::size_t n) {
  std::vector<T> h(n);
  if (n) REQUIRE(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
  return h;
}

}  // namespace memattn_gpu_test
