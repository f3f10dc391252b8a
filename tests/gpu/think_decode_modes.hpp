// cuda::think_decode in the three launch modes the ThinK and composed GPU tests check (Catch
// REQUIRE on every call): 0 = one CTA per segment; 1 = split-KV with 32-token splits (many
// partials, empty splits for shorter segments, regions in different CTAs); 2 = split-KV sized by
// the wrapper. Split modes also check that 4 bytes less workspace is refused.
#pragma once

#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <cstddef>

#include "memattn/cuda/think.cuh"

namespace memattn_gpu_test {

inline void think_decode_mode(const memattn::kernels::ThinKDecodeParams& p, int mode, int max_tokens) {
  using memattn::Status;
  if (mode == 0) {
    REQUIRE(memattn::cuda::think_decode(p, nullptr) == Status::kSuccess);
  } else {
    const int split_keys = mode == 1 ? 32 : 0;
    std::size_t bytes = 0;
    void* ws = nullptr;
    REQUIRE(memattn::cuda::think_decode_workspace_size(p, max_tokens, &bytes, split_keys) == Status::kSuccess);
    if (mode == 1) REQUIRE(bytes > 0);
    if (bytes) {
      REQUIRE(cudaMalloc(&ws, bytes) == cudaSuccess);
      REQUIRE(memattn::cuda::think_decode(p, max_tokens, ws, bytes - 4, nullptr, split_keys) == Status::kErrorWorkspaceTooSmall);
    }
    REQUIRE(memattn::cuda::think_decode(p, max_tokens, ws, bytes, nullptr, split_keys) == Status::kSuccess);
    REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
    cudaFree(ws);
    return;
  }
  REQUIRE(cudaDeviceSynchronize() == cudaSuccess);
}

}  // namespace memattn_gpu_test
