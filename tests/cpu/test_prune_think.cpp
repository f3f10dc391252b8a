// ThinK channel selection (issue 7, spec eviction.md §3.6, §7.1 T-THINK-1, §7.3 G-f T-THINK-2/3,
// RG-01): scores equal the per-channel Frobenius contribution, the kept set equals the brute-force
// optimum over all C(d, d_keep) subsets when the window queries' channel columns are orthogonal,
// stays within 1.5x of it on heavy-tailed channels, error grows with lambda, ties are deterministic.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "memattn/prune/think.hpp"

using namespace memattn;

namespace {

struct Case {
  int d, w, n;
  std::vector<double> q, k;  // [w][d], [n][d]
};

// G-f: per-channel key scales LogNormal(0, 1) with 4 outliers x10; rank-4 queries + noise.
Case heavy_tailed(int d, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd(0, 1);
  std::lognormal_distribution<double> ln(0, 1);
  Case c{d, 32, 64, {}, {}};
  std::vector<double> scale(d);
  for (auto& s : scale) s = ln(rng);
  for (int o = 0; o < 4; ++o) scale[static_cast<std::size_t>((o * 5 + 1) % d)] *= 10;
  c.k.resize(static_cast<std::size_t>(c.n * d));
  for (int j = 0; j < c.n; ++j)
    for (int x = 0; x < d; ++x) c.k[static_cast<std::size_t>(j * d + x)] = scale[static_cast<std::size_t>(x)] * nd(rng);
  std::vector<double> basis(static_cast<std::size_t>(4 * d));
  for (auto& b : basis) b = nd(rng);
  c.q.assign(static_cast<std::size_t>(c.w * d), 0);
  for (int i = 0; i < c.w; ++i) {
    double a[4];
    for (double& x : a) x = nd(rng);
    for (int x = 0; x < d; ++x) {
      double v = 0.1 * nd(rng);
      for (int r = 0; r < 4; ++r) v += a[r] * basis[static_cast<std::size_t>(r * d + x)];
      c.q[static_cast<std::size_t>(i * d + x)] = v;
    }
  }
  return c;
}

// Orthogonal channel columns of Q_w (w >= d): Gram-Schmidt on random columns, random norms.
Case orthogonal(int d, std::uint32_t seed) {
  Case c = heavy_tailed(d, seed);
  c.w = d + 4;
  std::mt19937 rng(seed * 7 + 1);
  std::normal_distribution<double> nd(0, 1);
  std::vector<std::vector<double>> cols(static_cast<std::size_t>(d), std::vector<double>(static_cast<std::size_t>(c.w)));
  for (int x = 0; x < d; ++x) {
    auto& u = cols[static_cast<std::size_t>(x)];
    for (auto& e : u) e = nd(rng);
    for (int y = 0; y < x; ++y) {
      const auto& v = cols[static_cast<std::size_t>(y)];
      double dot = 0;
      for (int i = 0; i < c.w; ++i) dot += u[static_cast<std::size_t>(i)] * v[static_cast<std::size_t>(i)];
      for (int i = 0; i < c.w; ++i) u[static_cast<std::size_t>(i)] -= dot * v[static_cast<std::size_t>(i)];
    }
    double nrm = 0;
    for (double e : u) nrm += e * e;
    for (double& e : u) e /= std::sqrt(nrm);
  }
  c.q.assign(static_cast<std::size_t>(c.w * d), 0);
  for (int x = 0; x < d; ++x) {
    const double s = std::exp(nd(rng));
    for (int i = 0; i < c.w; ++i) c.q[static_cast<std::size_t>(i * d + x)] = s * cols[static_cast<std::size_t>(x)][static_cast<std::size_t>(i)];
  }
  return c;
}

// M = (QᵀQ) ∘ (KᵀK): err(S)² = sum over pruned a, b of M[a][b].
std::vector<double> gram(const Case& c) {
  const int d = c.d;
  std::vector<double> m(static_cast<std::size_t>(d * d));
  for (int a = 0; a < d; ++a)
    for (int b = 0; b < d; ++b) {
      double qq = 0, kk = 0;
      for (int i = 0; i < c.w; ++i) qq += c.q[static_cast<std::size_t>(i * d + a)] * c.q[static_cast<std::size_t>(i * d + b)];
      for (int j = 0; j < c.n; ++j) kk += c.k[static_cast<std::size_t>(j * d + a)] * c.k[static_cast<std::size_t>(j * d + b)];
      m[static_cast<std::size_t>(a * d + b)] = qq * kk;
    }
  return m;
}

double err2(const std::vector<double>& m, int d, std::uint32_t kept_mask) {
  double e = 0;
  for (int a = 0; a < d; ++a) {
    if (kept_mask >> a & 1u) continue;
    for (int b = 0; b < d; ++b)
      if (!(kept_mask >> b & 1u)) e += m[static_cast<std::size_t>(a * d + b)];
  }
  return e;
}

// ThinK's kept set as a bit mask (G = 1).
std::uint32_t think_mask(const Case& c, int d_keep, std::vector<float>* scores = nullptr) {
  std::vector<double> qsq(static_cast<std::size_t>(c.d), 0), ksq(static_cast<std::size_t>(c.d), 0);
  for (int i = 0; i < c.w; ++i) {
    std::vector<float> row(c.q.begin() + i * c.d, c.q.begin() + (i + 1) * c.d);
    prune::accumulate_sq(row.data(), c.d, 1, c.d, qsq.data());
  }
  for (int j = 0; j < c.n; ++j)
    for (int x = 0; x < c.d; ++x) ksq[static_cast<std::size_t>(x)] += c.k[static_cast<std::size_t>(j * c.d + x)] * c.k[static_cast<std::size_t>(j * c.d + x)];
  std::vector<float> s(static_cast<std::size_t>(c.d));
  prune::channel_scores(qsq.data(), c.w, ksq.data(), c.n, c.d, s.data());
  std::vector<std::uint64_t> key(static_cast<std::size_t>(c.d));
  std::vector<std::uint8_t> ch(static_cast<std::size_t>(d_keep));
  REQUIRE(prune::select_channels(s.data(), c.d, d_keep, key.data(), ch.data()) == Status::kSuccess);
  std::uint32_t mask = 0;
  for (int i = 0; i < d_keep; ++i) {
    if (i > 0) REQUIRE(ch[static_cast<std::size_t>(i)] > ch[static_cast<std::size_t>(i - 1)]);
    mask |= 1u << ch[static_cast<std::size_t>(i)];
  }
  if (scores) *scores = s;
  return mask;
}

double best_err2(const std::vector<double>& m, int d, int d_keep) {
  double best = INFINITY;
  for (std::uint32_t mask = 0; mask < (1u << d); ++mask)
    if (__builtin_popcount(mask) == d_keep) best = std::min(best, err2(m, d, mask));
  return best;
}

}  // namespace

TEST_CASE("ThinK keep count: lambda is the pruned fraction (RG-01)", "[think]") {
  CHECK(prune::keep_count(128, 0.4f) == 77);
  CHECK(prune::keep_count(128, 0.4f, 8) == 80);
  CHECK(prune::keep_count(64, 0.4f) == 39);
  CHECK(prune::keep_count(8, 0.4f) == 5);
  CHECK(prune::keep_count(64, 0.f) == 64);
  CHECK(prune::keep_count(4, 0.99f) == 1);
}

TEST_CASE("ThinK T-THINK-1: score * w * N equals the channel's Frobenius contribution", "[think]") {
  const Case c = heavy_tailed(16, 11);
  std::vector<float> s;
  think_mask(c, 8, &s);
  for (int x = 0; x < c.d; ++x) {
    // ||Q[:,x] K[:,x]ᵀ||_F² computed from the outer product
    double f = 0;
    for (int i = 0; i < c.w; ++i)
      for (int j = 0; j < c.n; ++j) {
        const double e = c.q[static_cast<std::size_t>(i * c.d + x)] * c.k[static_cast<std::size_t>(j * c.d + x)];
        f += e * e;
      }
    CHECK(std::abs(static_cast<double>(s[static_cast<std::size_t>(x)]) * c.w * c.n - f) <= 1e-6 * f);
  }
}

TEST_CASE("ThinK T-THINK-2: orthogonal window channels -> the brute-force optimum", "[think]") {
  for (int d : {16, 20}) {
    for (std::uint32_t seed = 1; seed <= (d == 16 ? 5u : 1u); ++seed) {
      const Case c = orthogonal(d, seed);
      const auto m = gram(c);
      const int keep = d / 2;
      const double got = err2(m, d, think_mask(c, keep));
      const double best = best_err2(m, d, keep);
      INFO("d " << d << " seed " << seed);
      CHECK(got <= best * (1 + 1e-9) + 1e-12);
    }
  }
}

TEST_CASE("ThinK T-THINK-3: heavy-tailed channels, median err/opt <= 1.5, monotone in lambda", "[think]") {
  const int d = 16;
  std::vector<double> ratio;
  for (std::uint32_t seed = 100; seed < 140; ++seed) {
    const Case c = heavy_tailed(d, seed);
    const auto m = gram(c);
    const double got = std::sqrt(err2(m, d, think_mask(c, d / 2)));
    const double best = std::sqrt(best_err2(m, d, d / 2));
    ratio.push_back(best > 0 ? got / best : 1.0);
    double prev = -1;
    for (float lambda : {0.25f, 0.5f, 0.75f}) {
      const double e = err2(m, d, think_mask(c, prune::keep_count(d, lambda)));
      CHECK(e >= prev);
      prev = e;
    }
  }
  std::nth_element(ratio.begin(), ratio.begin() + static_cast<std::ptrdiff_t>(ratio.size() / 2), ratio.end());
  const double median = ratio[ratio.size() / 2];
  INFO("median err_ThinK / err_opt = " << median);
  CHECK(median <= 1.5);
  CHECK(median >= 1.0);
}

TEST_CASE("ThinK ties prune the higher channel; NaN scores rank lowest; bad input", "[think]") {
  std::vector<float> s = {1, 2, 2, 2, 0.5f, 2};
  std::vector<std::uint64_t> key(6);
  std::vector<std::uint8_t> ch(3);
  REQUIRE(prune::select_channels(s.data(), 6, 3, key.data(), ch.data()) == Status::kSuccess);
  CHECK(std::vector<int>(ch.begin(), ch.end()) == std::vector<int>{1, 2, 3});
  s = {NAN, 1, 3, 2};
  ch.resize(3);
  REQUIRE(prune::select_channels(s.data(), 4, 3, key.data(), ch.data()) == Status::kSuccess);
  CHECK(std::vector<int>(ch.begin(), ch.end()) == std::vector<int>{1, 2, 3});
  CHECK(prune::select_channels(s.data(), 4, 0, key.data(), ch.data()) == Status::kErrorInvalidArgument);
  CHECK(prune::select_channels(s.data(), 4, 5, key.data(), ch.data()) == Status::kErrorInvalidArgument);
  CHECK(prune::select_channels(nullptr, 4, 2, key.data(), ch.data()) == Status::kErrorNullPointer);
  prune::ThinKParams p;
  CHECK(prune::check(p, 64) == Status::kSuccess);
  p.prune = 1.f;
  CHECK(prune::check(p, 64) == Status::kErrorInvalidArgument);
  p.prune = 0.4f;
  CHECK(prune::check(p, 512) == Status::kErrorUnsupportedHeadDim);
}
