// Token merging (issue 6: D2O, KVMerger): merge routines vs naive fp64 references, D2O layer
// budgets (densities, exact sums, protected layers), the caches through --kv (exact budgets,
// kept positions, bad parameters), and the G-e near-duplicate case where KVMerger beats
// H2O at equal budget on the attention output of held-out future queries.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/kv_factory.hpp"
#include "common/test_data.hpp"
#include "memattn/cpu/evict_kv_cache.hpp"
#include "memattn/cpu/evict_merge.hpp"
#include "memattn/cpu/evict_select.hpp"
#include "memattn/evict/merge_policies.hpp"

using namespace memattn;

namespace {

using Rows = std::vector<std::vector<double>>;

Rows to_rows(const std::vector<float>& x, std::int64_t N, std::int64_t D) {
  Rows r(static_cast<std::size_t>(N), std::vector<double>(static_cast<std::size_t>(D)));
  for (std::int64_t j = 0; j < N; ++j)
    for (std::int64_t d = 0; d < D; ++d) r[static_cast<std::size_t>(j)][static_cast<std::size_t>(d)] = x[static_cast<std::size_t>(j * D + d)];
  return r;
}

double cos_ref(const std::vector<double>& a, const std::vector<double>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (std::size_t d = 0; d < a.size(); ++d) ab += a[d] * b[d], aa += a[d] * a[d], bb += b[d] * b[d];
  return aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 0.0;
}

void check_rows(const std::vector<float>& got, const Rows& want, double rtol) {
  for (std::size_t j = 0; j < want.size(); ++j)
    for (std::size_t d = 0; d < want[j].size(); ++d) {
      INFO("row " << j << " channel " << d);
      REQUIRE(std::abs(got[j * want[j].size() + d] - want[j][d]) <= rtol * (1e-3 + std::abs(want[j][d])));
    }
}

// Keys with runs of near-duplicates (consecutive rows close to a shared direction).
std::vector<float> clustered_keys(std::int64_t N, std::int64_t D, std::int64_t run, float noise, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> k(static_cast<std::size_t>(N * D));
  std::vector<float> base(static_cast<std::size_t>(D));
  for (std::int64_t j = 0; j < N; ++j) {
    if (j % run == 0)
      for (auto& b : base) b = nd(rng);
    for (std::int64_t d = 0; d < D; ++d) k[static_cast<std::size_t>(j * D + d)] = base[static_cast<std::size_t>(d)] + noise * nd(rng);
  }
  return k;
}

}  // namespace

TEST_CASE("NearestCos (D2O) merge == naive fp64 reference, EMA threshold over two compactions", "[merge]") {
  const std::int64_t N = 40, D = 16;
  for (std::uint32_t seed : {1u, 2u, 3u}) {
    std::vector<float> k = clustered_keys(N, D, 3, 0.4f, seed);
    std::vector<float> v = memattn_test::random_vector<float>(static_cast<std::size_t>(N * D), seed + 10);
    evict::NearestCos::Params p;
    p.alpha = 0.3f;
    p.beta = 0.7f;
    evict::NearestCos::SegmentState st;
    cpu::MergeScratch scratch;
    double tau_ref = 0;
    bool has = false;
    std::int64_t n = N;
    for (int step = 0; step < 2; ++step) {
      // keep every third slot plus the last 6
      std::vector<std::int32_t> keep;
      for (std::int64_t j = 0; j < n; ++j)
        if (j % 3 == 0 || j >= n - 6) keep.push_back(static_cast<std::int32_t>(j));
      Rows K = to_rows(k, n, D), V = to_rows(v, n, D);
      // reference
      std::vector<char> kept(static_cast<std::size_t>(n), 0);
      for (auto j : keep) kept[static_cast<std::size_t>(j)] = 1;
      std::vector<std::int64_t> tgt;
      std::vector<double> sims;
      std::vector<std::int64_t> ev;
      for (std::int64_t e = 0; e < n; ++e) {
        if (kept[static_cast<std::size_t>(e)]) continue;
        double best = -2;
        std::int64_t bt = -1;
        for (auto t : keep) {
          const double c = cos_ref(K[static_cast<std::size_t>(e)], K[static_cast<std::size_t>(t)]);
          if (c > best) best = c, bt = t;
        }
        ev.push_back(e), tgt.push_back(bt), sims.push_back(best);
      }
      double mean = 0;
      for (double s : sims) mean += s;
      mean /= static_cast<double>(sims.size());
      tau_ref = has ? 0.3 * tau_ref + 0.7 * mean : mean;
      has = true;
      Rows Kw = K, Vw = V;
      std::vector<double> wsum(static_cast<std::size_t>(n), 0.0);
      Rows ak(static_cast<std::size_t>(n), std::vector<double>(static_cast<std::size_t>(D), 0.0)), av = ak;
      std::int64_t merged_ref = 0;
      for (std::size_t i = 0; i < ev.size(); ++i) {
        if (sims[i] < tau_ref) continue;
        const double w = std::max(sims[i], 0.0);
        for (std::int64_t d = 0; d < D; ++d) {
          ak[static_cast<std::size_t>(tgt[i])][static_cast<std::size_t>(d)] += w * K[static_cast<std::size_t>(ev[i])][static_cast<std::size_t>(d)];
          av[static_cast<std::size_t>(tgt[i])][static_cast<std::size_t>(d)] += w * V[static_cast<std::size_t>(ev[i])][static_cast<std::size_t>(d)];
        }
        wsum[static_cast<std::size_t>(tgt[i])] += w;
        ++merged_ref;
      }
      for (auto t : keep)
        if (wsum[static_cast<std::size_t>(t)] > 0)
          for (std::int64_t d = 0; d < D; ++d) {
            const std::size_t tz = static_cast<std::size_t>(t), dz = static_cast<std::size_t>(d);
            Kw[tz][dz] = (K[tz][dz] + ak[tz][dz]) / (1 + wsum[tz]);
            Vw[tz][dz] = (V[tz][dz] + av[tz][dz]) / (1 + wsum[tz]);
          }
      std::int64_t merged = -1;
      REQUIRE(cpu::merge_nearest_cos(p, &st, k.data(), v.data(), D, n, keep.data(), static_cast<std::int64_t>(keep.size()),
                                     &scratch, &merged) == Status::kSuccess);
      CHECK(merged == merged_ref);
      CHECK(merged > 0);
      CHECK(std::abs(st.tau - tau_ref) <= 1e-6 * (1 + std::abs(tau_ref)));
      check_rows(k, Kw, 1e-5);
      check_rows(v, Vw, 1e-5);
      // next step: compact (gather) and go on with the kept rows plus a few new ones
      cpu::compact_rows(k.data(), D, keep.data(), static_cast<std::int64_t>(keep.size()));
      cpu::compact_rows(v.data(), D, keep.data(), static_cast<std::int64_t>(keep.size()));
      n = static_cast<std::int64_t>(keep.size());
    }
  }
}

TEST_CASE("ConsecutiveGaussian (KVMerger) sets, pivots and merge == naive fp64 reference", "[merge]") {
  const std::int64_t N = 64, D = 8;
  for (std::uint32_t seed : {4u, 5u, 6u, 7u}) {
    std::vector<float> k = clustered_keys(N, D, 4, 0.3f, seed);
    std::vector<float> v = memattn_test::random_vector<float>(static_cast<std::size_t>(N * D), seed + 20);
    std::vector<float> acc = memattn_test::random_vector<float>(static_cast<std::size_t>(N), seed + 30);
    for (auto& a : acc) a = std::abs(a);
    std::vector<std::int32_t> pos(static_cast<std::size_t>(N));
    for (std::int64_t j = 0; j < N; ++j) pos[static_cast<std::size_t>(j)] = static_cast<std::int32_t>(j < 30 ? j : j + 1);  // a gap at 30
    evict::ConsecutiveGaussian::Params p;
    p.theta = 0.7f;
    p.max_set = 3;
    const evict::Protection pr{2, 8};
    const std::int32_t t_cur = pos.back();
    // reference sets
    Rows K = to_rows(k, N, D), V = to_rows(v, N, D);
    std::vector<std::int64_t> piv(static_cast<std::size_t>(N), -1);
    std::vector<float> score = acc;
    for (std::int64_t j = 0; j < N;) {
      if (evict::is_protected(pos[static_cast<std::size_t>(j)], t_cur, pr)) {
        ++j;
        continue;
      }
      std::int64_t e = j + 1;
      while (e < N && e - j < 3 && !evict::is_protected(pos[static_cast<std::size_t>(e)], t_cur, pr) &&
             pos[static_cast<std::size_t>(e)] == pos[static_cast<std::size_t>(e - 1)] + 1 &&
             cos_ref(K[static_cast<std::size_t>(e)], K[static_cast<std::size_t>(e - 1)]) >= 0.7)
        ++e;
      std::int64_t b = j;
      double tot = 0;
      for (std::int64_t i = j; i < e; ++i) {
        tot += acc[static_cast<std::size_t>(i)];
        if (acc[static_cast<std::size_t>(i)] > acc[static_cast<std::size_t>(b)]) b = i;
      }
      for (std::int64_t i = j; i < e; ++i) {
        piv[static_cast<std::size_t>(i)] = b;
        score[static_cast<std::size_t>(i)] = i == b ? static_cast<float>(tot) : -std::numeric_limits<float>::infinity();
      }
      j = e;
    }
    cpu::MergeScratch s;
    std::vector<float> sc = acc;
    REQUIRE(cpu::consecutive_sets(p, k.data(), D, pos.data(), N, t_cur, pr, sc.data(), &s) == Status::kSuccess);
    std::int64_t multi = 0;
    for (std::int64_t j = 0; j < N; ++j) {
      CHECK(s.target[static_cast<std::size_t>(j)] == piv[static_cast<std::size_t>(j)]);
      CHECK(sc[static_cast<std::size_t>(j)] == score[static_cast<std::size_t>(j)]);
      if (piv[static_cast<std::size_t>(j)] >= 0 && piv[static_cast<std::size_t>(j)] != j) ++multi;
    }
    CHECK(multi > 0);
    // select on the set scores, then merge
    std::vector<std::uint64_t> keys(static_cast<std::size_t>(N));
    std::vector<std::int32_t> keep(static_cast<std::size_t>(N));
    std::int64_t count = 0;
    REQUIRE(cpu::select_keep(sc.data(), pos.data(), N, 24, t_cur, pr, evict::TieBreak::kPreferEarlier, keys.data(),
                             keep.data(), &count) == Status::kSuccess);
    REQUIRE(count == 24);
    std::vector<char> kept(static_cast<std::size_t>(N), 0);
    for (std::int64_t i = 0; i < count; ++i) kept[static_cast<std::size_t>(keep[static_cast<std::size_t>(i)])] = 1;
    Rows Kw = K, Vw = V;
    std::vector<float> accw = acc;
    std::int64_t merged_ref = 0;
    for (std::int64_t b = 0; b < N; ++b) {
      if (piv[static_cast<std::size_t>(b)] != b || !kept[static_cast<std::size_t>(b)]) continue;
      std::vector<std::int64_t> mem;
      for (std::int64_t i = 0; i < N; ++i)
        if (piv[static_cast<std::size_t>(i)] == b && !kept[static_cast<std::size_t>(i)]) mem.push_back(i);
      if (mem.empty()) continue;
      auto dist = [&](std::int64_t i) {
        double x = 0;
        for (std::int64_t d = 0; d < D; ++d) {
          const double t = K[static_cast<std::size_t>(b)][static_cast<std::size_t>(d)] - K[static_cast<std::size_t>(i)][static_cast<std::size_t>(d)];
          x += t * t;
        }
        return x;
      };
      double s2 = 0;
      for (auto i : mem) s2 += dist(i);
      s2 /= static_cast<double>(mem.size());
      double gs = 1, sc_sum = acc[static_cast<std::size_t>(b)];
      std::vector<double> ak = K[static_cast<std::size_t>(b)], av = V[static_cast<std::size_t>(b)];
      for (auto i : mem) {
        const double g = s2 > 0 ? std::exp(-dist(i) / (2 * s2)) : 1.0;
        for (std::int64_t d = 0; d < D; ++d) {
          ak[static_cast<std::size_t>(d)] += g * K[static_cast<std::size_t>(i)][static_cast<std::size_t>(d)];
          av[static_cast<std::size_t>(d)] += g * V[static_cast<std::size_t>(i)][static_cast<std::size_t>(d)];
        }
        gs += g;
        sc_sum += acc[static_cast<std::size_t>(i)];
      }
      for (std::int64_t d = 0; d < D; ++d) {
        Kw[static_cast<std::size_t>(b)][static_cast<std::size_t>(d)] = ak[static_cast<std::size_t>(d)] / gs;
        Vw[static_cast<std::size_t>(b)][static_cast<std::size_t>(d)] = av[static_cast<std::size_t>(d)] / gs;
      }
      accw[static_cast<std::size_t>(b)] = static_cast<float>(sc_sum);
      merged_ref += static_cast<std::int64_t>(mem.size());
    }
    std::int64_t merged = -1;
    REQUIRE(cpu::merge_consecutive_gaussian(k.data(), v.data(), D, N, keep.data(), count, acc.data(), &s, &merged) ==
            Status::kSuccess);
    CHECK(merged == merged_ref);
    CHECK(merged > 0);
    check_rows(k, Kw, 1e-5);
    check_rows(v, Vw, 1e-5);
    for (std::int64_t j = 0; j < N; ++j) CHECK(acc[static_cast<std::size_t>(j)] == Approx(accw[static_cast<std::size_t>(j)]).epsilon(1e-6));
  }
}

TEST_CASE("KVMerger: exact duplicates merge to the pivot's row; weights are 1", "[merge]") {
  const std::int64_t N = 12, D = 4;
  std::vector<float> k(static_cast<std::size_t>(N * D), 1.f), v(static_cast<std::size_t>(N * D));
  for (std::int64_t j = 0; j < N; ++j)
    for (std::int64_t d = 0; d < D; ++d) v[static_cast<std::size_t>(j * D + d)] = static_cast<float>(j);
  std::vector<std::int32_t> pos(static_cast<std::size_t>(N));
  for (std::int64_t j = 0; j < N; ++j) pos[static_cast<std::size_t>(j)] = static_cast<std::int32_t>(j);
  std::vector<float> sc(static_cast<std::size_t>(N), 1.f);
  sc[2] = 5.f;  // pivot of the first set [0, 4)
  evict::ConsecutiveGaussian::Params p;
  p.max_set = 4;
  cpu::MergeScratch s;
  REQUIRE(cpu::consecutive_sets(p, k.data(), D, pos.data(), N, 11, evict::Protection{}, sc.data(), &s) == Status::kSuccess);
  CHECK(s.target[0] == 2);
  CHECK(s.target[3] == 2);
  CHECK(s.target[4] == 4);
  const std::int32_t keep[3] = {2, 4, 8};  // one pivot per set
  REQUIRE(cpu::merge_consecutive_gaussian(k.data(), v.data(), D, N, keep, 3, static_cast<float*>(nullptr), &s) ==
          Status::kSuccess);
  CHECK(v[2 * D] == Approx((0 + 1 + 2 + 3) / 4.0));
  CHECK(v[4 * D] == Approx((4 + 5 + 6 + 7) / 4.0));
  CHECK(v[8 * D] == Approx((8 + 9 + 10 + 11) / 4.0));
}

TEST_CASE("VarianceSoftmax (D2O) densities and layer budgets: fp64 reference, exact sums, floors", "[merge]") {
  // density of one layer: min-max over heads, mean
  const double hv[3] = {2.0, 5.0, 3.0};
  CHECK(evict::VarianceSoftmax::layer_density(hv, 3) == Approx((0.0 + 3.0 / (3 + 1e-6) + 1.0 / (3 + 1e-6)) / 3).epsilon(1e-12));
  const float col[5] = {1.f, 2.f, 4.f, 0.5f, 0.25f};
  double m = (1 + 2 + 4 + 0.5 + 0.25) / 5.0, var = 0;
  for (float c : col) var += (c - m) * (c - m);
  CHECK(evict::VarianceSoftmax::head_variance(col, 5) == Approx(var / 5).epsilon(1e-12));
  // golden: L = 6, C = 40, floor 24, protected 0,1,5 (v = 0)
  const double v[6] = {0.9, 0.8, 0.2, 0.6, 1.0, 0.7};
  std::int64_t out[6];
  evict::VarianceSoftmax::Params p;
  REQUIRE(evict::VarianceSoftmax::plan(p, v, 6, 40, 24, out) == Status::kSuccess);
  {
    const double w[6] = {1, 1, std::exp(-0.2), std::exp(-0.6), std::exp(-1.0), 1};
    double sw = 0;
    for (double x : w) sw += x;
    std::int64_t tot = 0;
    for (int l = 0; l < 6; ++l) {
      const double share = 6 * 16 * w[l] / sw;
      CHECK(out[l] - 24 >= static_cast<std::int64_t>(std::floor(share)));
      CHECK(out[l] - 24 <= static_cast<std::int64_t>(std::floor(share)) + 1);
      tot += out[l];
    }
    CHECK(tot == 240);
    CHECK(out[0] >= out[2]);
    CHECK(out[2] > out[3]);
    CHECK(out[3] > out[4]);
  }
  // property: sums exact, floors held, more density -> no more budget
  std::mt19937 rng(9);
  for (int it = 0; it < 2000; ++it) {
    const int L = 1 + static_cast<int>(rng() % 40);
    const std::int64_t C = 1 + static_cast<std::int64_t>(rng() % 3000);
    const std::int64_t F = static_cast<std::int64_t>(rng() % static_cast<std::uint32_t>(C + 1));
    std::vector<double> dv(static_cast<std::size_t>(L));
    for (auto& x : dv) x = std::uniform_real_distribution<double>(0, 1)(rng);
    std::vector<std::int64_t> b(static_cast<std::size_t>(L));
    evict::VarianceSoftmax::Params q;
    q.protect_first = static_cast<int>(rng() % 3);
    q.protect_last = static_cast<int>(rng() % 2);
    REQUIRE(evict::VarianceSoftmax::plan(q, dv.data(), L, C, F, b.data()) == Status::kSuccess);
    std::int64_t tot = 0;
    for (int l = 0; l < L; ++l) {
      REQUIRE(b[static_cast<std::size_t>(l)] >= F);
      tot += b[static_cast<std::size_t>(l)];
    }
    REQUIRE(tot == L * C);
  }
  std::int64_t o[2];
  CHECK(evict::VarianceSoftmax::plan(p, v, 0, 40, 24, o) == Status::kErrorInvalidArgument);
  CHECK(evict::VarianceSoftmax::plan(p, v, 2, 0, 0, o) == Status::kErrorInvalidArgument);
}

namespace {

cache::CacheShape merge_shape() {
  cache::CacheShape s;
  s.layers = 5;
  s.q_heads = 4;
  s.kv_heads = 2;
  s.head_dim = 16;
  s.max_tokens = 300;
  s.max_sequences = 1;
  return s;
}

std::unique_ptr<cache::KvCache> make(const std::string& spec, const cache::CacheShape& s) {
  std::unique_ptr<cache::KvCache> c;
  std::string err;
  const Status st = memattn_test::make_kv_cache(spec, s, Executor{}, &c, &err);
  INFO(spec << ": " << err);
  REQUIRE(st == Status::kSuccess);
  return c;
}

// Feeds n tokens in chunks of `chunk` to every layer (random q, clustered k, random v); appends
// every output to *outs when given.
void feed(cache::KvCache& c, const cache::CacheShape& s, std::int64_t n, std::int64_t chunk, std::uint32_t seed,
          std::vector<float>* outs = nullptr) {
  const std::int64_t D = s.head_dim;
  std::vector<float> kall = clustered_keys(n * s.kv_heads, D, 4 * s.kv_heads, 0.2f, seed);
  for (std::int64_t t0 = 0; t0 < n; t0 += chunk) {
    const std::int64_t m = std::min(chunk, n - t0);
    for (int l = 0; l < s.layers; ++l) {
      std::vector<float> q = memattn_test::random_vector<float>(static_cast<std::size_t>(m * s.q_heads * D), seed + 7 * static_cast<std::uint32_t>(t0 + l));
      std::vector<float> k(kall.begin() + t0 * s.kv_heads * D, kall.begin() + (t0 + m) * s.kv_heads * D);
      std::vector<float> v = memattn_test::random_vector<float>(static_cast<std::size_t>(m * s.kv_heads * D), seed + 11 * static_cast<std::uint32_t>(t0 + l));
      std::vector<float> o(q.size());
      REQUIRE(c.attend(0, l, make_view<3>(static_cast<const float*>(q.data()), {m, s.q_heads, D}),
                       make_view<3>(static_cast<const float*>(k.data()), {m, s.kv_heads, D}),
                       make_view<3>(static_cast<const float*>(v.data()), {m, s.kv_heads, D}),
                       make_view<3>(o.data(), {m, s.q_heads, D})) == Status::kSuccess);
      if (outs != nullptr) outs->insert(outs->end(), o.begin(), o.end());
    }
    REQUIRE(c.end_chunk(0, {}) == Status::kSuccess);
  }
}

}  // namespace

TEST_CASE("d2o / kvmerger caches: exact (planned) budgets, kept positions (kvmerger: chronological), bad params", "[merge]") {
  const cache::CacheShape s = merge_shape();
  SECTION("d2o") {
    auto c = make("d2o:budget=40", s);
    auto* d = dynamic_cast<cpu::EvictKvCache<evict::D2O>*>(c.get());
    REQUIRE(d != nullptr);
    feed(*c, s, 120, 8, 3);
    std::int64_t total = 0;
    for (int l = 0; l < s.layers; ++l) {
      const std::int64_t b = d->segment_budget(0, l);
      total += b;
      CHECK(b >= 4 + 20);
      for (int h = 0; h < s.kv_heads; ++h) {
        CHECK(d->segment_size(0, l, h) == std::min<std::int64_t>(b, 120));
        // D2O fills evicted slots from the tail (hole filling): compare the kept set, ascending
        const std::int32_t* p = d->segment_positions(0, l, h);
        std::vector<std::int32_t> pos(p, p + d->segment_size(0, l, h));
        std::sort(pos.begin(), pos.end());
        for (std::size_t j = 1; j < pos.size(); ++j) CHECK(pos[j] > pos[j - 1]);
        for (std::int32_t j = 0; j < 4; ++j) CHECK(pos[static_cast<std::size_t>(j)] == j);  // sinks
      }
    }
    CHECK(total == 5 * 40);
    c->reset(0);
    CHECK(d->segment_budget(0, 0) == 40);
  }
  SECTION("kvmerger") {
    auto c = make("kvmerger:budget=32,theta=0.5", s);
    auto* d = dynamic_cast<cpu::EvictKvCache<evict::KVMerger>*>(c.get());
    REQUIRE(d != nullptr);
    feed(*c, s, 100, 5, 4);
    for (int l = 0; l < s.layers; ++l)
      for (int h = 0; h < s.kv_heads; ++h) {
        CHECK(d->segment_size(0, l, h) == 32);
        const std::int32_t* pos = d->segment_positions(0, l, h);
        for (std::int64_t j = 1; j < 32; ++j) CHECK(pos[j] > pos[j - 1]);
        CHECK(pos[31] == 99);
      }
  }
  std::unique_ptr<cache::KvCache> c;
  std::string err;
  CHECK(memattn_test::make_kv_cache("d2o:budget=10,recent=8", s, Executor{}, &c, &err) == Status::kErrorInvalidArgument);
  CHECK(memattn_test::make_kv_cache("d2o:budget=1000", s, Executor{}, &c, &err) == Status::kErrorCapacityExceeded);
  CHECK(memattn_test::make_kv_cache("d2o:budget=64,alpha=-1", s, Executor{}, &c, &err) != Status::kSuccess);
  CHECK(memattn_test::make_kv_cache("kvmerger:budget=0", s, Executor{}, &c, &err) != Status::kSuccess);
  CHECK(memattn_test::make_kv_cache("kvmerger:budget=64,theta=2", s, Executor{}, &c, &err) != Status::kSuccess);
  CHECK(memattn_test::make_kv_cache("kvmerger:budget=64,set=0", s, Executor{}, &c, &err) != Status::kSuccess);
  CHECK(c == nullptr);
  evict::KVMerger::Params kp = evict::kvmerger_params(64);
  kp.merger.max_set = 0;
  CHECK(evict::KVMerger::check(kp, 300) == Status::kErrorInvalidArgument);
  evict::D2O::Params dp = evict::d2o_params(64);
  dp.allocator.protect_first = -1;
  CHECK(evict::D2O::check(dp, 300) == Status::kErrorInvalidArgument);
}

TEST_CASE("P-7 no-op: budget >= tokens leaves d2o / kvmerger outputs bit-identical to h2o (nothing evicted)",
          "[merge]") {
  const cache::CacheShape s = merge_shape();
  std::vector<float> ref, got;
  auto h = make("h2o:budget=100", s);
  feed(*h, s, 90, 7, 5, &ref);
  for (const char* spec : {"d2o:budget=100", "kvmerger:budget=100,theta=0"}) {
    got.clear();
    auto c = make(spec, s);
    feed(*c, s, 90, 7, 5, &got);
    INFO(spec);
    REQUIRE(got.size() == ref.size());
    CHECK(std::memcmp(got.data(), ref.data(), ref.size() * sizeof(float)) == 0);
    CHECK(c->bytes() == h->bytes());
  }
}

namespace {

// G-e near-duplicates: clusters of `run` consecutive keys (pairwise cos >= 0.95), distinct values.
// Prefill the prefix through the cache (its queries feed the H2O scores), compact to C, then the
// relative attention-output error of `future` held-out queries over the kept rows vs all rows (fp64).
double near_duplicate_error(const std::string& spec, std::uint32_t seed) {
  cache::CacheShape s;
  s.layers = 1;
  s.q_heads = 1;
  s.kv_heads = 1;
  s.head_dim = 32;
  s.max_tokens = 512;
  s.max_sequences = 1;
  const std::int64_t N = 256, D = 32, run = 4, future = 64;
  std::vector<float> k = clustered_keys(N, D, run, 0.1f, seed);
  std::vector<float> v = memattn_test::random_vector<float>(static_cast<std::size_t>(N * D), seed + 1);
  std::vector<float> q = memattn_test::random_vector<float>(static_cast<std::size_t>(N * D), seed + 2);
  std::vector<float> o(q.size());
  auto c = make(spec, s);
  REQUIRE(c->attend(0, 0, make_view<3>(static_cast<const float*>(q.data()), {N, 1, D}),
                    make_view<3>(static_cast<const float*>(k.data()), {N, 1, D}),
                    make_view<3>(static_cast<const float*>(v.data()), {N, 1, D}), make_view<3>(o.data(), {N, 1, D})) ==
          Status::kSuccess);
  REQUIRE(c->end_chunk(0, {}) == Status::kSuccess);
  const Half* kk = nullptr;
  const Half* vv = nullptr;
  std::int64_t kept = 0;
  if (auto* a = dynamic_cast<cpu::EvictKvCache<evict::KVMerger>*>(c.get())) {
    kk = a->segment_keys(0, 0, 0), vv = a->segment_values(0, 0, 0), kept = a->segment_size(0, 0, 0);
  } else if (auto* b = dynamic_cast<cpu::EvictKvCache<evict::H2O>*>(c.get())) {
    kk = b->segment_keys(0, 0, 0), vv = b->segment_values(0, 0, 0), kept = b->segment_size(0, 0, 0);
  }
  REQUIRE(kk != nullptr);
  std::vector<float> fq = memattn_test::random_vector<float>(static_cast<std::size_t>(future * D), seed + 3);
  auto attend = [&](const double* qr, std::int64_t n, auto key, auto val, std::vector<double>* out) {
    std::vector<double> sc(static_cast<std::size_t>(n));
    double mx = -1e300;
    for (std::int64_t j = 0; j < n; ++j) {
      double x = 0;
      for (std::int64_t d = 0; d < D; ++d) x += qr[d] * key(j, d);
      sc[static_cast<std::size_t>(j)] = x / std::sqrt(static_cast<double>(D));
      mx = std::max(mx, sc[static_cast<std::size_t>(j)]);
    }
    double l = 0;
    for (auto& x : sc) l += (x = std::exp(x - mx));
    out->assign(static_cast<std::size_t>(D), 0.0);
    for (std::int64_t j = 0; j < n; ++j)
      for (std::int64_t d = 0; d < D; ++d) (*out)[static_cast<std::size_t>(d)] += sc[static_cast<std::size_t>(j)] / l * val(j, d);
  };
  double num = 0, den = 0;
  std::vector<double> qr(static_cast<std::size_t>(D)), of, oc;
  for (std::int64_t i = 0; i < future; ++i) {
    for (std::int64_t d = 0; d < D; ++d) qr[static_cast<std::size_t>(d)] = fq[static_cast<std::size_t>(i * D + d)];
    attend(qr.data(), N, [&](std::int64_t j, std::int64_t d) { return static_cast<double>(k[static_cast<std::size_t>(j * D + d)]); },
           [&](std::int64_t j, std::int64_t d) { return static_cast<double>(v[static_cast<std::size_t>(j * D + d)]); }, &of);
    attend(qr.data(), kept, [&](std::int64_t j, std::int64_t d) { return static_cast<double>(to_float(kk[j * D + d])); },
           [&](std::int64_t j, std::int64_t d) { return static_cast<double>(to_float(vv[j * D + d])); }, &oc);
    for (std::int64_t d = 0; d < D; ++d) {
      num += (of[static_cast<std::size_t>(d)] - oc[static_cast<std::size_t>(d)]) * (of[static_cast<std::size_t>(d)] - oc[static_cast<std::size_t>(d)]);
      den += of[static_cast<std::size_t>(d)] * of[static_cast<std::size_t>(d)];
    }
  }
  return std::sqrt(num / den);
}

}  // namespace

TEST_CASE("G-e near-duplicates: KVMerger beats H2O at equal budget on future-query output error", "[merge]") {
  int wins = 0;
  const int seeds = 10;
  double sum_m = 0, sum_h = 0;
  for (int i = 0; i < seeds; ++i) {
    const std::uint32_t seed = 100 + 17 * static_cast<std::uint32_t>(i);
    const double em = near_duplicate_error("kvmerger:budget=96,set=4", seed);
    const double eh = near_duplicate_error("h2o:budget=96", seed);
    sum_m += em, sum_h += eh;
    if (em < eh) ++wins;
  }
  INFO("mean error kvmerger " << sum_m / seeds << " h2o " << sum_h / seeds);
  CHECK(wins >= 9);  // >= 90% of seeds (§7.3 G-e)
  CHECK(sum_m < 0.8 * sum_h);
}
