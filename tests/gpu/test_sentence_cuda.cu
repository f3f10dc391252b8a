// GPU sentence scoring (issue 6, SentenceKV) vs the CPU path: scores bit-identical to
// evict::sentence_scores (fp64 fma in d order on both sides) for random sums, counts (0 included)
// and head dims, and hence the same sentence choice. Exits 77 without a device.
#include <catch2/catch.hpp>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "memattn/cuda/sentence.cuh"
#include "memattn/evict/sentence.hpp"
#include "device_vectors.hpp"

using memattn_gpu_test::upload;

using namespace memattn;

TEST_CASE("sentence_score on the GPU == evict::sentence_scores (bit-identical), same choice", "[sentence][gpu]") {
  std::mt19937 rng(77);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (int round = 0; round < 12; ++round) {
    const int H = 1 + static_cast<int>(rng() % 4), S = 1 + static_cast<int>(rng() % 700);
    const int D = round % 3 == 0 ? 64 : (round % 3 == 1 ? 128 : 8 + static_cast<int>(rng() % 40));
    std::vector<float> ksum(static_cast<std::size_t>(H) * S * D), qbar(static_cast<std::size_t>(H) * D);
    std::vector<std::int64_t> count(static_cast<std::size_t>(S));
    for (auto& c : count) c = rng() % 5 == 0 ? 0 : 1 + rng() % 30;
    for (auto& x : ksum) x = nd(rng) * 10.f;
    for (auto& x : qbar) x = nd(rng);
    std::vector<float> want(static_cast<std::size_t>(H) * S);
    for (int h = 0; h < H; ++h)
      evict::sentence_scores(ksum.data() + static_cast<std::size_t>(h) * S * D, count.data(), S,
                             qbar.data() + static_cast<std::size_t>(h) * D, D, want.data() + static_cast<std::size_t>(h) * S);
    kernels::SentenceScoreParams p;
    p.ksum = upload(ksum);
    p.count = upload(count);
    p.qbar = upload(qbar);
    float* score = nullptr;
    REQUIRE(cudaMalloc(&score, want.size() * sizeof(float)) == cudaSuccess);
    p.score = score;
    p.heads = H;
    p.sentences = S;
    p.head_dim = D;
    REQUIRE(cuda::sentence_score(p, nullptr) == Status::kSuccess);
    std::vector<float> got(want.size());
    REQUIRE(cudaMemcpy(got.data(), score, got.size() * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
    // the same scores give the same choice
    std::vector<std::uint64_t> keys(static_cast<std::size_t>(S));
    std::vector<std::int32_t> a(static_cast<std::size_t>(S)), b(static_cast<std::size_t>(S));
    std::int64_t na = 0, nb = 0, ta = 0, tb = 0;
    REQUIRE(evict::choose_sentences(got.data(), count.data(), S, 100, keys.data(), a.data(), &na, &ta) == Status::kSuccess);
    REQUIRE(evict::choose_sentences(want.data(), count.data(), S, 100, keys.data(), b.data(), &nb, &tb) == Status::kSuccess);
    CHECK(na == nb);
    CHECK(a == b);
    cudaFree(const_cast<float*>(p.ksum));
    cudaFree(const_cast<std::int64_t*>(p.count));
    cudaFree(const_cast<float*>(p.qbar));
    cudaFree(score);
  }
  kernels::SentenceScoreParams bad;
  CHECK(cuda::sentence_score(bad, nullptr) == Status::kErrorNullPointer);
}
