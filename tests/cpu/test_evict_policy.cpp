// Token eviction (issue 5): selection keys, deterministic top-k, compaction moving state,
// scorers against fp64 oracles that materialise attention, pooling, GQA reduction order,
// PyramidKV budgets (golden tables), policy composition traits.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "common/test_data.hpp"
#include "memattn/cpu/dense_attention.hpp"
#include "memattn/cpu/evict_scores.hpp"
#include "memattn/cpu/evict_select.hpp"
#include "memattn/evict/key.hpp"
#include "memattn/evict/policy.hpp"

using namespace memattn;
using evict::GroupReduce;
using evict::Protection;
using evict::TieBreak;

// ---- composition traits ------------------------------------------------------------------------

static_assert(evict::H2O::kSignals & evict::kDecodeProbs, "H2O needs decode probabilities");
static_assert(evict::SnapKV::kSignals & evict::kWindowQueries, "SnapKV needs window queries");
static_assert(!(evict::StreamingLLM::kSignals & (evict::kDecodeProbs | evict::kWindowQueries)), "positional only");
static_assert(evict::KNormPolicy::kSignals & evict::kKeys, "KNorm reads keys");
static_assert(evict::Scissorhands::kState == evict::StateKind::kU64, "Scissorhands keeps a 64-bit history");

TEST_CASE("ord_score is monotone, -0 == +0, NaN lowest", "[evict]") {
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> xs = {-inf, -3e38f, -1.f, -1e-40f, -0.f, 0.f, 1e-45f, 1e-40f, 1.f, 2.f, 3e38f, inf};
  for (std::size_t i = 1; i < xs.size(); ++i) {
    if (xs[i] == xs[i - 1]) {
      CHECK(evict::ord_score(xs[i]) == evict::ord_score(xs[i - 1]));
    } else {
      CHECK(evict::ord_score(xs[i]) > evict::ord_score(xs[i - 1]));
    }
  }
  CHECK(evict::ord_score(std::nanf("")) < evict::ord_score(-inf));
  // ties: kPreferEarlier ranks the earlier position higher
  CHECK(evict::select_key(1.f, 3, TieBreak::kPreferEarlier) > evict::select_key(1.f, 4, TieBreak::kPreferEarlier));
  CHECK(evict::select_key(1.f, 3, TieBreak::kPreferLater) < evict::select_key(1.f, 4, TieBreak::kPreferLater));
  CHECK(evict::select_key(2.f, 9, TieBreak::kPreferEarlier) > evict::select_key(1.f, 0, TieBreak::kPreferEarlier));
}

// Brute-force oracle: protected + the best k candidates by (score desc, tie by position).
static std::vector<std::int32_t> oracle_keep(const std::vector<float>& s, const std::vector<std::int32_t>& pos,
                                             std::int64_t C, std::int32_t t_cur, Protection pr, TieBreak tie) {
  const std::int64_t n = static_cast<std::int64_t>(s.size());
  std::vector<std::int32_t> prot, cand;
  for (std::int32_t j = 0; j < n; ++j) {
    const bool p = pos[j] < pr.n_sink || pos[j] > static_cast<std::int64_t>(t_cur) - pr.n_recent;
    (p ? prot : cand).push_back(j);
  }
  const std::int64_t target = std::min<std::int64_t>(n, std::max<std::int64_t>(C, static_cast<std::int64_t>(prot.size())));
  const std::int64_t k = target - static_cast<std::int64_t>(prot.size());
  std::sort(cand.begin(), cand.end(), [&](std::int32_t a, std::int32_t b) {
    const float sa = s[a] == 0.f ? 0.f : s[a], sb = s[b] == 0.f ? 0.f : s[b];
    if (sa != sb) return sa > sb;
    return tie == TieBreak::kPreferEarlier ? pos[a] < pos[b] : pos[a] > pos[b];
  });
  std::vector<std::int32_t> keep = prot;
  keep.insert(keep.end(), cand.begin(), cand.begin() + k);
  std::sort(keep.begin(), keep.end());
  return keep;
}

TEST_CASE("select_keep: exact budget, protected kept, chronological, ties by position (P-1..P-3)", "[evict]") {
  std::mt19937 rng(1234);
  for (int it = 0; it < 1500; ++it) {
    const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % 300);
    std::vector<std::int32_t> pos(static_cast<std::size_t>(n));
    std::int32_t p = static_cast<std::int32_t>(rng() % 5);
    for (auto& x : pos) {
      x = p;
      p += 1 + static_cast<std::int32_t>(rng() % 3);
    }
    const int levels = 1 + static_cast<int>(rng() % 6);  // few levels => many ties
    std::vector<float> s(static_cast<std::size_t>(n));
    for (auto& x : s) {
      const int r = static_cast<int>(rng() % levels);
      x = r == 0 ? ((rng() & 1) ? -0.f : 0.f) : (r == 1 ? -std::numeric_limits<float>::infinity() : static_cast<float>(r));
    }
    // every third case evicts only a few candidates (kth_largest's one-pass path, as at decode)
    const std::int64_t C = it % 3 == 0 ? std::max<std::int64_t>(1, n - 1 - static_cast<std::int64_t>(rng() % 20))
                                       : 1 + static_cast<std::int64_t>(rng() % (n + 8));
    Protection pr;
    pr.n_sink = static_cast<std::int32_t>(rng() % 6);
    pr.n_recent = static_cast<std::int32_t>(rng() % 20);
    const TieBreak tie = (rng() & 1) ? TieBreak::kPreferLater : TieBreak::kPreferEarlier;
    const std::int32_t t_cur = pos.back();
    std::vector<std::uint64_t> scratch(static_cast<std::size_t>(n));
    std::vector<std::int32_t> keep(static_cast<std::size_t>(n), -1);
    std::int64_t count = -1;
    REQUIRE(cpu::select_keep(s.data(), pos.data(), n, C, t_cur, pr, tie, scratch.data(), keep.data(), &count) ==
            Status::kSuccess);
    keep.resize(static_cast<std::size_t>(count));
    const auto want = oracle_keep(s, pos, C, t_cur, pr, tie);
    REQUIRE(keep == want);
    std::int64_t n_prot = 0;
    for (std::int32_t j = 0; j < n; ++j) n_prot += evict::is_protected(pos[j], t_cur, pr) ? 1 : 0;
    CHECK(count == std::min<std::int64_t>(n, std::max<std::int64_t>(C, n_prot)));
    for (std::size_t i = 1; i < keep.size(); ++i) CHECK(keep[i] > keep[i - 1]);
  }
}

TEST_CASE("select_keep: NaN scores and bad arguments give a Status, nothing written", "[evict]") {
  std::vector<float> s = {1.f, std::nanf(""), 2.f};
  std::vector<std::int32_t> pos = {0, 1, 2}, keep = {-7, -7, -7};
  std::vector<std::uint64_t> scratch(3);
  std::int64_t count = -7;
  CHECK(cpu::select_keep(s.data(), pos.data(), 3, 2, 2, Protection{}, TieBreak::kPreferEarlier, scratch.data(),
                         keep.data(), &count) == Status::kErrorNonFinite);
  CHECK(count == -7);
  CHECK(keep[0] == -7);
  CHECK(cpu::select_keep(s.data(), pos.data(), 3, 0, 2, Protection{}, TieBreak::kPreferEarlier, scratch.data(),
                         keep.data(), &count) == Status::kErrorInvalidArgument);
  // a protected NaN is never scored
  Protection pr;
  pr.n_recent = 2;
  CHECK(cpu::select_keep(s.data(), pos.data(), 3, 2, 2, pr, TieBreak::kPreferEarlier, scratch.data(), keep.data(),
                         &count) == Status::kSuccess);
  CHECK(count == 2);
  // N = 1 works (RG-12)
  CHECK(cpu::select_keep(s.data(), pos.data(), 1, 1, 0, Protection{}, TieBreak::kPreferEarlier, scratch.data(),
                         keep.data(), &count) == Status::kSuccess);
  CHECK(count == 1);
}

TEST_CASE("compaction permutes K, V, positions and state together (P-6: state[slot] == pos[slot])", "[evict]") {
  std::mt19937 rng(99);
  const std::int64_t D = 4;
  for (int run = 0; run < 50; ++run) {
    std::vector<float> k, state, scores;
    std::vector<std::int32_t> pos;
    std::int32_t next = 0;
    const std::int64_t C = 4 + static_cast<std::int64_t>(rng() % 30);
    Protection pr;
    pr.n_sink = static_cast<std::int32_t>(rng() % 3);
    pr.n_recent = static_cast<std::int32_t>(rng() % 4);
    for (int step = 0; step < 200; ++step) {
      const int add = 1 + static_cast<int>(rng() % 5);
      for (int a = 0; a < add; ++a) {
        pos.push_back(next);
        state.push_back(static_cast<float>(next));
        for (std::int64_t d = 0; d < D; ++d) k.push_back(static_cast<float>(next * 10 + d));
        ++next;
      }
      const std::int64_t n = static_cast<std::int64_t>(pos.size());
      if (n <= C) continue;
      scores.resize(static_cast<std::size_t>(n));
      for (auto& x : scores) x = static_cast<float>(rng() % 7);
      std::vector<std::uint64_t> scratch(static_cast<std::size_t>(n));
      std::vector<std::int32_t> keep(static_cast<std::size_t>(n));
      std::int64_t count = 0;
      REQUIRE(cpu::select_keep(scores.data(), pos.data(), n, C, pos.back(), pr, TieBreak::kPreferEarlier,
                               scratch.data(), keep.data(), &count) == Status::kSuccess);
      cpu::compact_rows(k.data(), D, keep.data(), count);
      cpu::compact_rows(pos.data(), 1, keep.data(), count);
      cpu::compact_rows(state.data(), 1, keep.data(), count);
      k.resize(static_cast<std::size_t>(count * D));
      pos.resize(static_cast<std::size_t>(count));
      state.resize(static_cast<std::size_t>(count));
      REQUIRE(count == std::max<std::int64_t>(C, 0));
      for (std::int64_t j = 0; j < count; ++j) {
        REQUIRE(state[static_cast<std::size_t>(j)] == static_cast<float>(pos[static_cast<std::size_t>(j)]));
        REQUIRE(k[static_cast<std::size_t>(j * D + 3)] == static_cast<float>(pos[static_cast<std::size_t>(j)] * 10 + 3));
        if (j > 0) REQUIRE(pos[static_cast<std::size_t>(j)] > pos[static_cast<std::size_t>(j - 1)]);
      }
      for (std::int32_t p = 0; p < pr.n_sink && p < next; ++p)
        REQUIRE(std::find(pos.begin(), pos.end(), p) != pos.end());
      for (std::int32_t p = std::max(0, next - pr.n_recent); p < next; ++p)
        REQUIRE(std::find(pos.begin(), pos.end(), p) != pos.end());
    }
  }
}

TEST_CASE("compact_rows == an out-of-place gather for any ascending keep set (runs, holes, none)", "[evict]") {
  std::mt19937 rng(3);
  for (int run = 0; run < 400; ++run) {
    const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % 60), row = 1 + static_cast<std::int64_t>(rng() % 3);
    std::vector<std::int32_t> keep;
    const unsigned density = rng() % 4;  // 0: few kept .. 3: most kept (long runs)
    for (std::int32_t j = 0; j < n; ++j)
      if (rng() % 4 <= density) keep.push_back(j);
    std::vector<int> base(static_cast<std::size_t>(n * row));
    for (std::size_t i = 0; i < base.size(); ++i) base[i] = static_cast<int>(i);
    std::vector<int> want;
    for (std::int32_t j : keep)
      for (std::int64_t c = 0; c < row; ++c) want.push_back(base[static_cast<std::size_t>(j * row + c)]);
    cpu::compact_rows(base.data(), row, keep.data(), static_cast<std::int64_t>(keep.size()));
    base.resize(want.size());
    REQUIRE(base == want);
  }
}

// ---- scorers vs fp64 oracles -------------------------------------------------------------------

static double reduce64(GroupReduce r, const std::vector<double>& xs) {
  double acc = xs[0];
  for (std::size_t i = 1; i < xs.size(); ++i) acc = r == GroupReduce::kMax ? std::max(acc, xs[i]) : acc + xs[i];
  return r == GroupReduce::kMean ? acc / static_cast<double>(xs.size()) : acc;
}

// fp64 probabilities of query row q (D) over keys [0, vis): materialised softmax.
static std::vector<double> softmax64(const float* q, const std::vector<float>& k, std::int64_t vis, std::int64_t D,
                                     double scale) {
  std::vector<double> s(static_cast<std::size_t>(vis));
  double m = -INFINITY;
  for (std::int64_t j = 0; j < vis; ++j) {
    double a = 0;
    for (std::int64_t d = 0; d < D; ++d) a += static_cast<double>(q[d]) * k[static_cast<std::size_t>(j * D + d)];
    s[static_cast<std::size_t>(j)] = a * scale;
    m = std::max(m, s[static_cast<std::size_t>(j)]);
  }
  double l = 0;
  for (double& x : s) l += (x = std::exp(x - m));
  for (double& x : s) x /= l;
  return s;
}

TEST_CASE("KNorm score = -||k||_2 (fp64 oracle)", "[evict]") {
  const int D = 64;
  const auto k = memattn_test::random_vector<float>(10 * D, 5, 3.f);
  std::vector<float> state(10);
  std::vector<std::int32_t> pos(10);
  evict::KNormPolicy::Params p = evict::knorm_params(4);
  for (int j = 0; j < 10; ++j) {
    evict::KNormPolicy::init_token(state.data(), j, k.data() + j * D, D);
    double n = 0;
    for (int d = 0; d < D; ++d) n += static_cast<double>(k[static_cast<std::size_t>(j * D + d)]) * k[static_cast<std::size_t>(j * D + d)];
    const double want = -std::sqrt(n);
    CHECK(std::abs(evict::KNormPolicy::score(p, state.data(), pos.data(), j) - want) <= 1e-6 * std::abs(want));
  }
}

TEST_CASE("decode_probs from the dense decode's LSE: H2O column sums (all queries) vs fp64", "[evict]") {
  for (int G : {1, 3, 4}) {
    for (GroupReduce red : {GroupReduce::kMean, GroupReduce::kMax, GroupReduce::kSum}) {
      const std::int64_t D = 16, Hkv = 1, Hq = G, N = 300, Tq = 40;  // last Tq tokens are queries
      const auto q = memattn_test::random_vector<float>(static_cast<std::size_t>(Tq * Hq * D), 7u + G, 1.5f);
      const auto k = memattn_test::random_vector<float>(static_cast<std::size_t>(N * D), 8u + G, 1.5f);
      const auto v = memattn_test::random_vector<float>(static_cast<std::size_t>(N * D), 9u + G);
      std::vector<float> o(static_cast<std::size_t>(Tq * Hq * D)), lse(static_cast<std::size_t>(Tq * Hq));
      attention::DecodeArgs<float, float> a;
      a.q = make_view<4>(q.data(), {1, Tq, Hq, D});
      a.k_cache = make_view<4>(k.data(), {1, Hkv, N, D});
      a.v_cache = make_view<4>(v.data(), {1, Hkv, N, D});
      a.o = make_view<4>(o.data(), {1, Tq, Hq, D});
      a.lse = make_view<3>(lse.data(), {1, Tq, Hq});
      REQUIRE(cpu::dense_decode(a) == Status::kSuccess);
      const float scale = 1.f / std::sqrt(static_cast<float>(D));
      std::vector<float> acc(static_cast<std::size_t>(N), 0.f);
      std::vector<double> want(static_cast<std::size_t>(N), 0.0);
      std::vector<float> scratch(cpu::probs_scratch_elems(G, D));
      for (std::int64_t t = 0; t < Tq; ++t) {
        const std::int64_t vis = N - Tq + t + 1;
        REQUIRE(cpu::decode_probs(q.data() + t * Hq * D, D, lse.data() + t * Hq, G, D, scale, k.data(), D, vis, red,
                                  scratch.data(), [&](std::int64_t j, float p) { acc[static_cast<std::size_t>(j)] += p; }) ==
                Status::kSuccess);
        std::vector<std::vector<double>> pg;
        for (int g = 0; g < G; ++g) pg.push_back(softmax64(q.data() + (t * Hq + g) * D, k, vis, D, scale));
        for (std::int64_t j = 0; j < vis; ++j) {
          std::vector<double> xs;
          for (int g = 0; g < G; ++g) xs.push_back(pg[static_cast<std::size_t>(g)][static_cast<std::size_t>(j)]);
          want[static_cast<std::size_t>(j)] += reduce64(red, xs);
        }
      }
      for (std::int64_t j = 0; j < N; ++j)
        REQUIRE(std::abs(acc[static_cast<std::size_t>(j)] - want[static_cast<std::size_t>(j)]) <=
                1e-4 * std::abs(want[static_cast<std::size_t>(j)]) + 1e-7);
    }
  }
}

TEST_CASE("window_colsum (two-pass LSE) vs materialised fp64 attention; reduce-then-pool order (P-9)", "[evict]") {
  for (int G : {1, 3, 4}) {
    for (GroupReduce red : {GroupReduce::kMean, GroupReduce::kMax, GroupReduce::kSum}) {
      const std::int64_t D = 8, N = 257, w = 9;
      const auto q = memattn_test::random_vector<float>(static_cast<std::size_t>(w * G * D), 17u + G, 2.f);
      const auto k = memattn_test::random_vector<float>(static_cast<std::size_t>(N * D), 18u + G, 2.f);
      std::vector<std::int32_t> kpos(static_cast<std::size_t>(N)), qpos(static_cast<std::size_t>(w));
      for (std::int64_t j = 0; j < N; ++j) kpos[static_cast<std::size_t>(j)] = static_cast<std::int32_t>(3 * j + 1);  // gaps: a compacted cache
      for (std::int64_t i = 0; i < w; ++i) qpos[static_cast<std::size_t>(i)] = kpos[static_cast<std::size_t>(N - w + i)];
      const float scale = 1.f / std::sqrt(static_cast<float>(D));
      std::vector<float> col(static_cast<std::size_t>(N));
      std::vector<float> scratch(cpu::window_colsum_scratch_elems(G, w, D, N));
      std::vector<std::int64_t> vis(static_cast<std::size_t>(w * G));
      REQUIRE(cpu::window_colsum(q.data(), G * D, D, qpos.data(), w, G, D, scale, k.data(), D, kpos.data(), N, red,
                                 col.data(), scratch.data(), vis.data()) == Status::kSuccess);
      std::vector<std::vector<double>> perhead(static_cast<std::size_t>(G), std::vector<double>(static_cast<std::size_t>(N), 0.0));
      for (std::int64_t i = 0; i < w; ++i)
        for (int g = 0; g < G; ++g) {
          const auto p = softmax64(q.data() + (i * G + g) * D, k, N - w + i + 1, D, scale);
          for (std::size_t j = 0; j < p.size(); ++j) perhead[static_cast<std::size_t>(g)][j] += p[j];
        }
      std::vector<double> want(static_cast<std::size_t>(N));
      for (std::int64_t j = 0; j < N; ++j) {
        std::vector<double> xs;
        for (int g = 0; g < G; ++g) xs.push_back(perhead[static_cast<std::size_t>(g)][static_cast<std::size_t>(j)]);
        want[static_cast<std::size_t>(j)] = reduce64(red, xs);
        REQUIRE(std::abs(col[static_cast<std::size_t>(j)] - want[static_cast<std::size_t>(j)]) <=
                1e-5 * std::abs(want[static_cast<std::size_t>(j)]) + 1e-7);
      }
      // pooling over the candidate region [0, N - w), both kinds and padding modes, direct definition
      const std::int64_t n = N - w;
      for (int kernel : {1, 5, 7}) {
        for (auto kind : {evict::PoolKind::kAvg, evict::PoolKind::kMax}) {
          for (bool pad : {true, false}) {
            std::vector<float> pooled(static_cast<std::size_t>(n));
            REQUIRE(cpu::pool_scores(col.data(), n, kernel, kind, pad, pooled.data()) == Status::kSuccess);
            for (std::int64_t j = 0; j < n; ++j) {
              double acc = kind == evict::PoolKind::kMax ? -INFINITY : 0.0;
              int cnt = 0;
              for (std::int64_t x = j - kernel / 2; x <= j + kernel / 2; ++x) {
                if (x < 0 || x >= n) continue;
                ++cnt;
                const double vx = want[static_cast<std::size_t>(x)];
                acc = kind == evict::PoolKind::kMax ? std::max(acc, vx) : acc + vx;
              }
              if (kind == evict::PoolKind::kAvg) acc /= pad ? kernel : cnt;
              REQUIRE(std::abs(pooled[static_cast<std::size_t>(j)] - acc) <= 1e-5 * std::abs(acc) + 1e-7);
            }
          }
        }
      }
    }
  }
}

TEST_CASE("Scissorhands history counts the last w_h unimportant steps", "[evict]") {
  evict::Scissorhands::Params p = evict::scissorhands_params(16);
  p.scorer.history = 4;
  std::vector<std::uint64_t> hist(1);
  std::vector<std::int32_t> pos(1, 0);
  evict::Scissorhands::init_token(hist.data(), 0, nullptr, 0);
  const float ps[] = {0.5f, 0.01f, 0.01f, 0.5f, 0.01f, 0.01f};  // N = 10: threshold 0.1
  for (float x : ps) evict::Scissorhands::on_decode_prob(p, hist.data(), 0, x, 10);
  // last 4 steps: 0.01 0.5 0.01 0.01 -> 3 unimportant
  CHECK(evict::Scissorhands::score(p, hist.data(), pos.data(), 0) == -3.f);
}

TEST_CASE("PyramidKV budgets: golden tables, exact total and parity (RG-11)", "[evict]") {
  evict::Pyramid::Params exact, parity;
  parity.exact_total = false;
  auto table = [](const evict::Pyramid::Params& p, int L, std::int64_t P, std::int64_t C, std::int64_t w) {
    std::vector<std::int64_t> t;
    for (int l = 0; l < L; ++l) t.push_back(evict::Pyramid::budget(p, l, L, P, C, w));
    return t;
  };
  // C = 100, w = 10: c = 90, lo = 4, hi = 176, step = floor(172 / 3) = 57 -> 176 119 62 5 (sum 362 = 360 + 2)
  CHECK(table(parity, 4, 1000, 100, 10) == std::vector<std::int64_t>{186, 129, 72, 15});
  CHECK(table(exact, 4, 1000, 100, 10) == std::vector<std::int64_t>{186, 129, 71, 14});
  // hi clamped to P - w = 170: lo = 10, step = 53 -> 170 117 64 11 (sum 362)
  CHECK(table(parity, 4, 180, 100, 10) == std::vector<std::int64_t>{180, 127, 74, 21});
  CHECK(table(exact, 4, 180, 100, 10) == std::vector<std::int64_t>{180, 127, 73, 20});
  // P < 2(C - w): uniform; P < C: no compression (budget C)
  CHECK(table(exact, 4, 150, 100, 10) == std::vector<std::int64_t>{100, 100, 100, 100});
  CHECK(table(exact, 4, 90, 100, 10) == std::vector<std::int64_t>{100, 100, 100, 100});
  // exact total over 30 layers for many prompt lengths
  for (std::int64_t P : {600, 1000, 2048, 4096, 100000}) {
    std::int64_t sum = 0;
    for (auto b : table(exact, 30, P, 256, 32)) sum += b;
    CHECK(sum == 30 * 256);
  }
}

TEST_CASE("policy parameter checks: C = 0, C below protected ranges, C over capacity", "[evict]") {
  CHECK(evict::H2O::check(evict::h2o_params(0), 100) == Status::kErrorInvalidArgument);
  CHECK(evict::H2O::check(evict::h2o_params(200), 100) == Status::kErrorCapacityExceeded);
  CHECK(evict::H2O::check(evict::h2o_params(64, 65), 100) == Status::kErrorInvalidArgument);
  CHECK(evict::H2O::check(evict::h2o_params(64, 32), 100) == Status::kSuccess);
  CHECK(evict::SnapKV::check(evict::snapkv_params(16), 100) == Status::kErrorInvalidArgument);  // w = 32 > C
  CHECK(evict::StreamingLLM::check(evict::streaming_llm_params(4, 60), 100) == Status::kSuccess);
  CHECK(evict::SnapKV::protection(evict::snapkv_params(64)).n_recent == 32);
}
