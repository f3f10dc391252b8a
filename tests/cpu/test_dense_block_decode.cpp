// The AVX2 dense block decode (cpu/dense_block_decode.hpp), built with -mavx2 -mfma -mf16c (main:
// avx2_main.cpp, skipped on CPUs without them): Q·Kᵀ and P·V of one key block straight from
// fp16 / bf16 / fp32 rows against fp64 sums, for every row count up to kMaxRows (4-row chunks and the
// 1-3-row remainders), odd and even key counts, head dims with an odd number of 8-lane vectors or
// a partial last one (scores: ThinK's pruned widths), and row strides wider than D; the fp16
// composed caches (ThinK, H2O + ThinK) whose decode reads their regions with it, and the eviction
// decode probabilities (H2O's accumulation) that read their keys with it, against fp64.
// test_cpu_dense_attention_avx2 runs the whole dense decode suite on this path.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "common/composed_oracle.hpp"
#include "memattn/cpu/composed_kv_cache.hpp"
#include "memattn/cpu/dense_block_decode.hpp"
#include "memattn/cpu/evict_scores.hpp"

using namespace memattn;

namespace {

template <class T>
std::vector<T> random_rows(std::int64_t n, std::int64_t stride, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<T> out(static_cast<std::size_t>(n * stride));
  for (auto& x : out) x = from_float<T>(nd(rng));
  return out;
}

template <class T>
void check_block(int D, int n, int rows, std::int64_t stride, std::uint32_t seed) {
  std::mt19937 rng(seed);
  const auto k = random_rows<T>(n, stride, rng), v = random_rows<T>(n, stride, rng);
  const std::int64_t ldq = D + 3, lds = n + 5, ldacc = D + 1;  // deliberately unaligned strides
  std::uniform_real_distribution<float> u(0.f, 1.f);
  std::normal_distribution<float> nd(0.f, 1.f);
  // Q rows are read for D rounded up to 8 columns (the last row's too): 8 spare floats at the end
  std::vector<float> q(static_cast<std::size_t>(rows * ldq + 8)), p(static_cast<std::size_t>(rows * lds));
  std::vector<float> s(static_cast<std::size_t>(rows * lds), -7.f), acc(static_cast<std::size_t>(rows * ldacc));
  for (auto& x : q) x = nd(rng);
  for (auto& x : p) x = u(rng);
  for (auto& x : acc) x = nd(rng);
  const std::vector<float> acc0 = acc;

  REQUIRE(cpu::dense_block::supported<T>());
  const bool whole = D % 8 == 0;  // values() takes whole 8-lane vectors; scores() any width
  REQUIRE(cpu::dense_block::available<T>(D) == whole);
  cpu::dense_block::scores(k.data(), stride, n, D, q.data(), rows, ldq, s.data(), lds);
  if (whole) cpu::dense_block::values(v.data(), stride, n, D, p.data(), rows, lds, acc.data(), ldacc);

  for (int r = 0; r < rows; ++r) {
    for (int t = 0; t < n; ++t) {
      double ref = 0, mag = 0;
      for (int c = 0; c < D; ++c) {
        const double x = static_cast<double>(q[r * ldq + c]) * to_float(k[t * stride + c]);
        ref += x;
        mag += std::fabs(x);
      }
      INFO("scores r=" << r << " t=" << t << " D=" << D << " n=" << n << " rows=" << rows);
      REQUIRE(std::fabs(s[r * lds + t] - ref) <= 2e-6 * mag + 1e-30);
    }
    for (int t = n; t < lds; ++t) REQUIRE(s[r * lds + t] == -7.f);  // nothing written past n
    if (!whole) continue;
    for (int c = 0; c < D; ++c) {
      double ref = acc0[r * ldacc + c], mag = std::fabs(ref);
      for (int t = 0; t < n; ++t) {
        const double x = static_cast<double>(p[r * lds + t]) * to_float(v[t * stride + c]);
        ref += x;
        mag += std::fabs(x);
      }
      INFO("values r=" << r << " c=" << c << " D=" << D << " n=" << n << " rows=" << rows);
      REQUIRE(std::fabs(acc[r * ldacc + c] - ref) <= 2e-6 * mag + 1e-30);
    }
    REQUIRE(acc[r * ldacc + D] == acc0[r * ldacc + D]);  // the column past D is untouched
  }
}

}  // namespace

TEMPLATE_TEST_CASE("dense block scores and values match fp64 sums", "[dense_block]", float, Half, BFloat16) {
  const int D = GENERATE(1, 5, 8, 24, 64, 72, 77, 128, 256);  // 1, 5, 77: a partial last vector (scores)
  const int n = GENERATE(1, 2, 7, 128);
  std::uint32_t seed = 1;
  for (int rows = 1; rows <= cpu::dense_block::kMaxRows; ++rows) {
    check_block<TestType>(D, n, rows, D, seed++);
    check_block<TestType>(D, n, rows, D + 40, seed++);  // a strided (token-major) cache
  }
}

TEST_CASE("dense block path: values() and the dense decode take whole 8-lane vectors only", "[dense_block]") {
  CHECK_FALSE(cpu::dense_block::available<float>(12));
  CHECK_FALSE(cpu::dense_block::available<Half>(60));
  CHECK(cpu::dense_block::available<BFloat16>(64));
  CHECK(cpu::dense_block::available<Half>(64));
  CHECK(cpu::dense_block::available<float>(128));
  CHECK(cpu::dense_block::supported<Half>());
  CHECK_FALSE(cpu::dense_block::supported<double>());
}

TEST_CASE("fp16 composed caches on the direct path == fp64 over their contents", "[dense_block][composed]") {
  using memattn_test::composed::check_composed;
  using memattn_test::composed::think_params;
  // ThinK alone: pruned keys 39 (D 64) or 77 (D 128) wide, a partial last vector; 2 and 4 query
  // rows per KV head (the 4-row kernel); the prefill chunks take the copying path
  using ThinK = cpu::ComposedKvCache<evict::NoEvict, prune::ThinK, quant::NoQuant>;
  for (int D : {64, 128})
    for (int hq : {4, 8}) {
      INFO("ThinK D " << D << " q_heads " << hq);
      ThinK::Config a;
      a.prune = think_params();
      check_composed<ThinK>(a, D, 2, 2, "think", 11, hq);
    }
  // H2O + ThinK: eviction compacts the fp16 regions between decode steps
  using H2OThinK = cpu::ComposedKvCache<evict::H2O, prune::ThinK, quant::NoQuant>;
  H2OThinK::Config b;
  b.evict = evict::h2o_params(96, 24);
  b.prune = think_params();
  check_composed<H2OThinK>(b, 64, 2, 2, "h2o+think", 13, 8);
  // pruned value channels keep the copying path
  ThinK::Config c;
  c.prune = think_params();
  c.prune.vprune = 0.25f;
  check_composed<ThinK>(c, 64, 2, 2, "think:vprune", 17, 8);
}

// H2O / Scissorhands decode probabilities (cpu::decode_probs) read the keys with the block
// kernel on this path: pbar_j = reduce_g exp(tau q_g . k_j - lse_g) against fp64.
TEMPLATE_TEST_CASE("eviction decode probabilities on the direct path == fp64", "[dense_block][evict]", float, Half) {
  const int G = GENERATE(1, 3, 4, 8), D = 64, N = 300;  // 300 keys: three 128-key blocks, the last partial
  std::mt19937 rng(static_cast<unsigned>(G));
  const auto k = random_rows<TestType>(N, D + 8, rng);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> q(static_cast<std::size_t>(G * D)), lse(static_cast<std::size_t>(G));
  for (auto& x : q) x = nd(rng);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<std::vector<double>> p(static_cast<std::size_t>(G), std::vector<double>(N));
  for (int g = 0; g < G; ++g) {
    double mx = -INFINITY, l = 0;
    for (int j = 0; j < N; ++j) {
      double d = 0;
      for (int c = 0; c < D; ++c) d += static_cast<double>(q[g * D + c]) * to_float(k[j * (D + 8) + c]);
      p[g][j] = d * scale;
      mx = std::max(mx, p[g][j]);
    }
    for (int j = 0; j < N; ++j) l += std::exp(p[g][j] - mx);
    lse[g] = static_cast<float>(mx + std::log(l));
    for (int j = 0; j < N; ++j) p[g][j] = std::exp(p[g][j] - mx - std::log(l));
  }
  std::vector<float> scratch(cpu::probs_scratch_elems(G, D));
  for (evict::GroupReduce red : {evict::GroupReduce::kMean, evict::GroupReduce::kMax}) {
    std::vector<float> got(N, -1.f);
    int calls = 0;
    REQUIRE(cpu::decode_probs(q.data(), D, lse.data(), G, D, static_cast<float>(scale), k.data(), D + 8, N, red, scratch.data(),
                              [&](std::int64_t j, float pbar) {
                                got[static_cast<std::size_t>(j)] = pbar;
                                ++calls;
                              }) == Status::kSuccess);
    REQUIRE(calls == N);
    for (int j = 0; j < N; ++j) {
      double want = 0;
      for (int g = 0; g < G; ++g) want = red == evict::GroupReduce::kMax ? std::max(want, p[g][j]) : want + p[g][j] / G;
      INFO("G " << G << " slot " << j);
      REQUIRE(std::fabs(got[j] - want) <= 2e-5 * want + 1e-9);
    }
  }
}
