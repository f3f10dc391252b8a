// Compile check: the ThinK two-segment decode kernel and its host wrapper, built to real SASS for
// each architecture in CMAKE_CUDA_ARCHITECTURES. compile.think_cubins checks the cubins.
#include <cstdio>

#include "memattn/cuda/think.cuh"

namespace mk = memattn::kernels;
// The decode and combine kernels are plain __global__ functions: the wrappers below instantiate them.

int main() {
  // Argument checks run without a device: bad arguments are rejected before any launch.
  mk::ThinKDecodeParams p{};
  memattn::Status s = memattn::cuda::think_decode(p, nullptr);
  if (s != memattn::Status::kErrorNullPointer) {
    std::printf("unexpected status %s\n", memattn::status_message(s));
    return 1;
  }
  static const memattn::Half dummy_h[1] = {};
  static const unsigned char ch[1] = {0};
  static const int n[1] = {1};
  static const float q[1] = {0};
  static float o[1];
  p = mk::ThinKDecodeParams{dummy_h, 0, 1, ch, 1, dummy_h, 0, dummy_h, 0, n, n, q, o, 1, 1, 1, 300, 1.f};
  s = memattn::cuda::think_decode(p, nullptr);
  if (s != memattn::Status::kErrorUnsupportedHeadDim) {
    std::printf("unexpected status %s (head_dim 300)\n", memattn::status_message(s));
    return 1;
  }
  p.head_dim = 64;
  p.d_keep = 65;
  if (memattn::cuda::think_decode(p, nullptr) != memattn::Status::kErrorInvalidArgument) return 1;
  p.d_keep = 1;
  p.q_heads = 9;  // 9 query heads on 1 KV head > 8
  if (memattn::cuda::think_decode(p, nullptr) != memattn::Status::kErrorGqaRatio) return 1;
  // The split-KV entry checks its bound and workspace the same way.
  p.q_heads = 1;
  if (memattn::cuda::think_decode_workspace_size(p, 4096, nullptr) != memattn::Status::kErrorNullPointer) return 1;
  if (memattn::cuda::think_decode(p, 4096, nullptr, 0, nullptr) == memattn::Status::kSuccess) return 1;
  std::printf("think instantiations: ok\n");
  return 0;
}
