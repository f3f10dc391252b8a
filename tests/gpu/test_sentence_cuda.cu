// GPU sentence scoring (issue 6, SentenceKV) vs the CPU path: scores bit-identical to
// evict::sentence_scores (fp64 fma in d order on both sides) for random sums, counts (0 included)
// and head dims, and hence the same sentence choice (common/sentence_cases.hpp). Exits 77 without
// a device.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "common/sentence_cases.hpp"
#include "memattn/cuda/sentence.cuh"
#include "memattn/evict/sentence.hpp"
#include "device_vectors.hpp"

using memattn_gpu_test::upload;

using namespace memattn;

TEST_CASE("sentence_score on the GPU == evict::sentence_scores (bit-identical), same choice", "[sentence][gpu]") {
  std::mt19937 rng(77);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (int round = 0; round < 12; ++round) {
    const memattn_test::SentenceCase c(round, rng, nd);
    float* score = nullptr;
    REQUIRE(cudaMalloc(&score, c.want.size() * sizeof(float)) == cudaSuccess);
    const kernels::SentenceScoreParams p = c.params(upload(c.ksum), upload(c.count), upload(c.qbar), score);
    REQUIRE(cuda::sentence_score(p, nullptr) == Status::kSuccess);
    std::vector<float> got(c.want.size());
    REQUIRE(cudaMemcpy(got.data(), score, got.size() * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
    c.check(got);
    cudaFree(const_cast<float*>(p.ksum));
    cudaFree(const_cast<std::int64_t*>(p.count));
    cudaFree(const_cast<float*>(p.qbar));
    cudaFree(score);
  }
  kernels::SentenceScoreParams bad;
  CHECK(cuda::sentence_score(bad, nullptr) == Status::kErrorNullPointer);
}
