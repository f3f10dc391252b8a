// Compile check: the eviction score epilogue (both state updates) and its host wrapper, built to
// real SASS for each architecture in CMAKE_CUDA_ARCHITECTURES (compile.evict_scores_cubins checks
// the cubins). The decode kernels' raw-logit output is compiled by dense_decode_instantiations;
// decode_accumulate (the decode with the fused H2O tail) here.
#include <cstdio>

#include "memattn/cuda/decode_accumulate.cuh"
#include "memattn/cuda/evict_scores.cuh"

namespace mk = memattn::kernels;
template __global__ void mk::evict_score_epilogue_kernel<mk::EvictScoreMode::kAccumulate>(const mk::EvictScoreParams);
template __global__ void mk::evict_score_epilogue_kernel<mk::EvictScoreMode::kHistory>(const mk::EvictScoreParams);
template __global__ void mk::evict_score_epilogue_kernel<mk::EvictScoreMode::kAccumulate, mk::kEvictScoreVec>(
    const mk::EvictScoreParams);

int main() {
  // Argument checks run without a device: invalid arguments are rejected before any launch.
  mk::EvictScoreParams p{};
  if (memattn::cuda::evict_accumulate_scores(p, mk::EvictScoreMode::kAccumulate, nullptr) !=
      memattn::Status::kErrorNullPointer) {
    std::printf("unexpected status for null pointers\n");
    return 1;
  }
  float f = 0.f;
  p.scores = &f;
  p.lse = &f;
  p.acc = &f;
  p.batch = p.kv_heads = p.group = p.q_tokens = p.kv_capacity = 1;
  p.gamma = 2.f;  // outside [0, 1]
  if (memattn::cuda::evict_accumulate_scores(p, mk::EvictScoreMode::kAccumulate, nullptr) !=
      memattn::Status::kErrorInvalidArgument) {
    std::printf("unexpected status for gamma > 1\n");
    return 1;
  }
  // decode_accumulate owns its logits: a caller's scores buffer is refused before anything runs.
  memattn::attention::DecodeArgs<memattn::BFloat16> a;
  a.scores = memattn::make_view<4>(&f, {1, 1, 1, 1});
  memattn::cuda::DecodeScoreState st;
  st.acc = &f;
  if (memattn::cuda::decode_accumulate(a, st, nullptr, 0, nullptr) != memattn::Status::kErrorInvalidArgument) {
    std::printf("unexpected status for caller logits\n");
    return 1;
  }
  std::printf("evict score instantiations: ok\n");
  return 0;
}
