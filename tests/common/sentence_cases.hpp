// SentenceKV sentence-score cases for the GPU test (gpu/test_sentence_cuda.cu) and the emulated
// one (emu/test_evict_step_scores_emu.cpp): random per-head key sums, query means and sentence
// counts (0 included), the CPU's evict::sentence_scores, the kernel's parameters, and the check
// that the kernel's scores are bit-identical and give the same evict::choose_sentences choice.
#pragma once

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "memattn/core/status.hpp"
#include "memattn/evict/sentence.hpp"
#include "memattn/kernels/sentence_score.cuh"

namespace memattn_test {

// Round `round` of the generator: H heads, S sentences, head dim D (64, 128 or 8 .. 47), ksum
// [H][S][D], qbar [H][D], count [S], want [H][S] the CPU's scores.
struct SentenceCase {
  int H, S, D;
  std::vector<float> ksum, qbar, want;
  std::vector<std::int64_t> count;
  SentenceCase(int round, std::mt19937& rng, std::normal_distribution<float>& nd) {
    H = 1 + static_cast<int>(rng() % 4), S = 1 + static_cast<int>(rng() % 700);
    D = round % 3 == 0 ? 64 : (round % 3 == 1 ? 128 : 8 + static_cast<int>(rng() % 40));
    ksum.resize(static_cast<std::size_t>(H) * S * D);
    qbar.resize(static_cast<std::size_t>(H) * D);
    count.resize(static_cast<std::size_t>(S));
    for (auto& c : count) c = rng() % 5 == 0 ? 0 : 1 + rng() % 30;
    for (auto& x : ksum) x = nd(rng) * 10.f;
    for (auto& x : qbar) x = nd(rng);
    want.resize(static_cast<std::size_t>(H) * S);
    for (int h = 0; h < H; ++h)
      memattn::evict::sentence_scores(ksum.data() + static_cast<std::size_t>(h) * S * D, count.data(), S,
                                      qbar.data() + static_cast<std::size_t>(h) * D, D, want.data() + static_cast<std::size_t>(h) * S);
  }

  memattn::kernels::SentenceScoreParams params(const float* d_ksum, const std::int64_t* d_count, const float* d_qbar, float* score) const {
    memattn::kernels::SentenceScoreParams p;
    p.ksum = d_ksum;
    p.count = d_count;
    p.qbar = d_qbar;
    p.score = score;
    p.heads = H;
    p.sentences = S;
    p.head_dim = D;
    return p;
  }

  // The kernel's scores: bit-identical to want, and the same choice.
  void check(const std::vector<float>& got) const {
    CHECK(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)) == 0);
    std::vector<std::uint64_t> keys(static_cast<std::size_t>(S));
    std::vector<std::int32_t> a(static_cast<std::size_t>(S)), b(static_cast<std::size_t>(S));
    std::int64_t na = 0, nb = 0, ta = 0, tb = 0;
    REQUIRE(memattn::evict::choose_sentences(got.data(), count.data(), S, 100, keys.data(), a.data(), &na, &ta) == memattn::Status::kSuccess);
    REQUIRE(memattn::evict::choose_sentences(want.data(), count.data(), S, 100, keys.data(), b.data(), &nb, &tb) ==
            memattn::Status::kSuccess);
    CHECK(na == nb);
    CHECK(a == b);
  }
};

}  // namespace memattn_test
