// Compile check: SentenceKV's sentence scoring kernel and its host wrapper, built to real SASS for
// each architecture in CMAKE_CUDA_ARCHITECTURES. compile.sentence_cubins checks the cubins.
#include <cstdio>

#include "memattn/cuda/sentence.cuh"

namespace mk = memattn::kernels;
template __global__ void mk::sentence_score_kernel<mk::kSentenceScoreThreads>(const mk::SentenceScoreParams);

int main() {
  // Argument checks run without a device: invalid arguments are rejected before any launch.
  mk::SentenceScoreParams p{};
  if (memattn::cuda::sentence_score(p, nullptr) != memattn::Status::kErrorNullPointer) {
    std::printf("unexpected status for null pointers\n");
    return 1;
  }
  float f = 0.f;
  std::int64_t c = 0;
  p.ksum = p.qbar = &f;
  p.score = &f;
  p.count = &c;
  if (memattn::cuda::sentence_score(p, nullptr) != memattn::Status::kErrorInvalidShape) {
    std::printf("unexpected status for an empty shape\n");
    return 1;
  }
  std::printf("sentence instantiations: ok\n");
  return 0;
}
