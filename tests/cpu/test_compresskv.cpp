// CompressKV (issue 6, spec eviction.md §3.11): the offline table format (round trip; truncated and
// corrupt input rejected with a message), head ranking, error-aware layer budgets against a naive
// port of the reference allocation (exact sum), the head-subset window score against fp64
// materialised attention, and the layer-shared cache through the --kv factory (text parameter
// `table=PATH`, shape check, identical positions in every KV head of a layer, keep sets equal to
// the fp64 reference selection).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "common/kv_factory.hpp"
#include "common/test_data.hpp"
#include "memattn/cpu/compresskv_kv_cache.hpp"
#include "memattn/cpu/compresskv_scores.hpp"
#include "memattn/evict/compresskv.hpp"

using namespace memattn;

namespace {

evict::CompressKvTable sample_table(int L, int Hq, int Hkv, int D, std::uint32_t seed) {
  evict::CompressKvTable t;
  t.model = "test-model";
  t.model_hash = 0x0123456789abcdefull;
  t.layers = L;
  t.q_heads = Hq;
  t.kv_heads = Hkv;
  t.head_dim = D;
  t.probe = "synthetic probe, 2 samples";
  std::mt19937 rng(seed);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int i = 0; i < L * Hq; ++i) t.head_scores.push_back(u(rng));
  t.error_budget = 64;
  for (int l = 0; l < L; ++l) t.layer_errors.push_back(0.05 + u(rng));
  return t;
}

std::string temp_path(const std::string& name) { return "/tmp/memattn_test_compresskv_" + name; }

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path, std::ios::binary);
  f << text;
}

// Naive port of longbench/pred_compresskv.py::error_aware_layer_budget_allocation (fp64, stable
// ordering for ties).
std::vector<std::int64_t> reference_budgets(const std::vector<double>& e, std::int64_t C, std::int64_t m, std::int64_t M) {
  const int L = static_cast<int>(e.size());
  double sum = 0;
  for (double x : e) sum += x;
  std::vector<double> imp(e.size());
  for (int l = 0; l < L; ++l) imp[l] = sum > 0 ? e[l] / sum : 1.0 / L;
  const double total = static_cast<double>(L) * C;
  std::vector<double> b(e.size());
  for (int l = 0; l < L; ++l) b[l] = std::min<double>(std::max<double>(m + std::nearbyint(imp[l] * (total - m * L)), m), M);
  double s = 0;
  for (double x : b) s += x;
  long long diff = static_cast<long long>(total - s);
  std::vector<int> order(e.size());
  std::iota(order.begin(), order.end(), 0);
  while (diff != 0) {
    if (diff > 0) {
      std::vector<int> cand;
      for (int l = 0; l < L; ++l)
        if (b[l] < M) cand.push_back(l);
      if (cand.empty()) break;
      std::stable_sort(cand.begin(), cand.end(), [&](int a, int c) { return imp[a] > imp[c]; });
      for (int i : cand)
        if (b[i] < M) {
          b[i] += 1;
          if (--diff == 0) break;
        }
    } else {
      std::vector<int> cand;
      for (int l = 0; l < L; ++l)
        if (b[l] > m) cand.push_back(l);
      if (cand.empty()) break;
      std::stable_sort(cand.begin(), cand.end(), [&](int a, int c) { return imp[a] < imp[c]; });
      // ascending importance, ties: the later layer first (mirror of the descending order)
      std::stable_sort(cand.begin(), cand.end(), [&](int a, int c) { return imp[a] < imp[c] || (imp[a] == imp[c] && a > c); });
      for (int i : cand)
        if (b[i] > m) {
          b[i] -= 1;
          if (++diff == 0) break;
        }
    }
  }
  return std::vector<std::int64_t>(b.begin(), b.end());
}

// fp64 head-subset window score from its definition (materialised softmax per selected head).
std::vector<double> reference_scores(const std::vector<double>& wq /*[w][Hq][D]*/, const std::vector<std::int32_t>& wpos,
                                     const std::vector<std::vector<double>>& keys /*[Hkv][N*D]*/,
                                     const std::vector<std::int32_t>& kpos, int Hq, int Hkv, int D,
                                     std::int64_t n_cand, const std::vector<std::int32_t>& heads, int kernel, bool avg,
                                     bool pad) {
  const std::int64_t w = static_cast<std::int64_t>(wpos.size()), N = static_cast<std::int64_t>(kpos.size());
  const int G = Hq / Hkv;
  std::vector<double> out(static_cast<std::size_t>(N), 0.0);
  for (std::int32_t hq : heads) {
    const std::vector<double>& K = keys[static_cast<std::size_t>(hq / G)];
    std::vector<double> col(static_cast<std::size_t>(N), 0.0);
    for (std::int64_t i = 0; i < w; ++i) {
      std::vector<double> sc;
      double mx = -INFINITY;
      for (std::int64_t j = 0; j < N && kpos[static_cast<std::size_t>(j)] <= wpos[static_cast<std::size_t>(i)]; ++j) {
        double a = 0;
        for (int d = 0; d < D; ++d) a += wq[static_cast<std::size_t>((i * Hq + hq) * D + d)] * K[static_cast<std::size_t>(j * D + d)];
        sc.push_back(a / std::sqrt(static_cast<double>(D)));
        mx = std::max(mx, sc.back());
      }
      double l = 0;
      for (double& x : sc) l += (x = std::exp(x - mx));
      for (std::size_t j = 0; j < sc.size(); ++j) col[j] += sc[j] / l;
    }
    for (std::int64_t j = 0; j < n_cand; ++j) {
      const std::int64_t a = std::max<std::int64_t>(0, j - kernel / 2), b = std::min<std::int64_t>(n_cand - 1, j + kernel / 2);
      double v = avg ? 0 : -INFINITY;
      for (std::int64_t x = a; x <= b; ++x) v = avg ? v + col[static_cast<std::size_t>(x)] : std::max(v, col[static_cast<std::size_t>(x)]);
      if (avg) v /= pad ? kernel : static_cast<double>(b - a + 1);
      out[static_cast<std::size_t>(j)] += v / static_cast<double>(heads.size());
    }
  }
  return out;
}

}  // namespace

TEST_CASE("compresskv table: round trip, shape check, head ranking", "[evict][compresskv]") {
  const evict::CompressKvTable t = sample_table(5, 8, 4, 8, 1);
  const std::string text = evict::format_compresskv_table(t);
  evict::CompressKvTable r;
  std::string err;
  REQUIRE(evict::parse_compresskv_table(text, &r, &err) == Status::kSuccess);
  CHECK(r.model == t.model);
  CHECK(r.model_hash == t.model_hash);
  CHECK(r.probe == t.probe);
  CHECK(r.error_budget == 64);
  REQUIRE(r.head_scores.size() == t.head_scores.size());
  for (std::size_t i = 0; i < t.head_scores.size(); ++i) CHECK(r.head_scores[i] == Approx(t.head_scores[i]).epsilon(1e-8));
  for (std::size_t i = 0; i < t.layer_errors.size(); ++i) CHECK(r.layer_errors[i] == Approx(t.layer_errors[i]).epsilon(1e-8));
  CHECK(evict::check_compresskv_table(r, 5, 8, 4, 8, &err) == Status::kSuccess);
  CHECK(evict::check_compresskv_table(r, 5, 8, 2, 8, &err) == Status::kErrorInvalidShape);
  CHECK(err.find("shape") != std::string::npos);
  // comments and blank lines are allowed
  REQUIRE(evict::parse_compresskv_table("# made by hand\n\n" + text + "\n# trailing comment\n", &r, &err) == Status::kSuccess);

  // ranking: highest score first, ties by lower head index; result ascending
  evict::CompressKvTable h = sample_table(1, 6, 2, 8, 2);
  h.head_scores = {0.5, 0.9, 0.5, 0.1, 0.9, 0.5};
  CHECK(evict::retrieval_heads(h, 0, 2) == std::vector<std::int32_t>{1, 4});
  CHECK(evict::retrieval_heads(h, 0, 3) == std::vector<std::int32_t>{0, 1, 4});
  CHECK(evict::retrieval_heads(h, 0, 4) == std::vector<std::int32_t>{0, 1, 2, 4});
  CHECK(evict::retrieval_heads(h, 0, 100).size() == 6);
}

TEST_CASE("compresskv table: truncated and corrupt input rejected with a message, nothing written", "[evict][compresskv]") {
  const evict::CompressKvTable t = sample_table(3, 4, 2, 8, 3);
  const std::string text = evict::format_compresskv_table(t);
  evict::CompressKvTable keep = sample_table(1, 2, 1, 4, 9);  // sentinel: must stay untouched
  const std::string before = evict::format_compresskv_table(keep);
  // every proper prefix (truncation at any byte) is rejected; the only accepted prefix is the
  // whole text (with or without the final newline)
  for (std::size_t n = 0; n + 1 < text.size(); ++n) {
    std::string err;
    INFO("prefix of " << n << " bytes");
    REQUIRE(evict::parse_compresskv_table(text.substr(0, n), &keep, &err) == Status::kErrorParse);
    REQUIRE(!err.empty());
  }
  CHECK(evict::format_compresskv_table(keep) == before);
  auto replaced = [&](const std::string& a, const std::string& b) {
    std::string s = text;
    const std::size_t p = s.find(a);
    REQUIRE(p != std::string::npos);
    return s.replace(p, a.size(), b);
  };
  const std::vector<std::pair<std::string, std::string>> corrupt = {
      {"memattn-compresskv-table 1", "memattn-compresskv-table 2"},  // unknown version
      {"memattn-compresskv-table", "memattn-compresskv-tabel"},
      {"model_hash 0123456789abcdef", "model_hash 0123456789abcdeg"},
      {"shape 3 4 2 8", "shape 3 4 3 8"},                          // q_heads not a multiple of kv_heads
      {"shape 3 4 2 8", "shape 3 4 2"},
      {"\n1 ", "\n2 "},                                            // rows out of order
      {"errors 64", "errors -1"},
      {"errors 64", "errors"},
      {"\nend", "\nend extra"},
      {"\nend\n", "\nend\n1 2\n"},                                 // content after end
      {"\nheads\n", "\n"},
  };
  for (const auto& c : corrupt) {
    std::string err;
    INFO(c.first << " -> " << c.second);
    CHECK(evict::parse_compresskv_table(replaced(c.first, c.second), &keep, &err) == Status::kErrorParse);
    CHECK(!err.empty());
  }
  // bad numbers in a head row and an error row
  {
    const std::size_t heads = text.find("heads\n") + 6;
    const std::size_t sp = text.find(' ', heads);  // after "0"
    for (const char* bad : {"nan", "-0.5", "inf", "1e999", "x", "0.5.5"}) {
      std::string s = text;
      const std::size_t end = s.find(' ', sp + 1);
      s.replace(sp + 1, end - sp - 1, bad);
      std::string err;
      INFO(bad);
      CHECK(evict::parse_compresskv_table(s, &keep, &err) == Status::kErrorParse);
      CHECK(err.find("not a finite number") != std::string::npos);
    }
    std::string s = text;
    const std::size_t e = s.find("\n0 ", s.find("errors"));
    s.insert(e + 3, "1 ");  // two values in an error row
    std::string err;
    CHECK(evict::parse_compresskv_table(s, &keep, &err) == Status::kErrorParse);
  }
  CHECK(evict::format_compresskv_table(keep) == before);
  CHECK(evict::parse_compresskv_table(text, nullptr, nullptr) == Status::kErrorNullPointer);
}

TEST_CASE("compresskv layer budgets: reference allocation, exact sum, bounds (1000 random cases)", "[evict][compresskv]") {
  // golden: L = 4, C = 100, m = 32, M = 300; e = (1, 2, 3, 4) -> 32 + round(e/10 * 272)
  const double e0[] = {1, 2, 3, 4};
  std::int64_t b[4];
  REQUIRE(evict::error_aware_budgets(e0, 4, 100, 32, 300, b) == Status::kSuccess);
  // 32+27.2->59, 32+54.4->86, 32+81.6->114, 32+108.8->141: sum 400 exactly
  CHECK(std::vector<std::int64_t>(b, b + 4) == std::vector<std::int64_t>{59, 86, 114, 141});
  // clipping at M forces redistribution to the next most important layers
  const double e1[] = {0, 0, 0, 1};
  REQUIRE(evict::error_aware_budgets(e1, 4, 100, 32, 150, b) == Status::kSuccess);
  // 32,32,32,150 (sum 246): +1 passes over layers 0,1,2 (3 at M) until 154 are placed
  CHECK(std::vector<std::int64_t>(b, b + 4) == std::vector<std::int64_t>{84, 83, 83, 150});
  // all zero -> uniform
  const double e2[] = {0, 0, 0};
  REQUIRE(evict::error_aware_budgets(e2, 3, 50, 32, 150, b) == Status::kSuccess);
  CHECK(std::vector<std::int64_t>(b, b + 3) == std::vector<std::int64_t>{50, 50, 50});
  // bad input
  const double bad[] = {1, NAN};
  CHECK(evict::error_aware_budgets(bad, 2, 50, 32, 150, b) == Status::kErrorNonFinite);
  const double neg[] = {1, -1};
  CHECK(evict::error_aware_budgets(neg, 2, 50, 32, 150, b) == Status::kErrorNonFinite);
  CHECK(evict::error_aware_budgets(e0, 4, 20, 32, 60, b) == Status::kErrorInvalidArgument);  // m > C
  CHECK(evict::error_aware_budgets(e0, 4, 100, 32, 99, b) == Status::kErrorInvalidArgument);  // M < C

  std::mt19937 rng(7);
  for (int it = 0; it < 1000; ++it) {
    const int L = 1 + static_cast<int>(rng() % 40);
    const std::int64_t C = 1 + static_cast<std::int64_t>(rng() % 700);
    const std::int64_t m = 1 + static_cast<std::int64_t>(rng() % static_cast<std::uint32_t>(C));
    const std::int64_t M = C * (1 + static_cast<std::int64_t>(rng() % 3));
    std::vector<double> e(static_cast<std::size_t>(L));
    std::exponential_distribution<double> ex(1.0);
    for (auto& x : e) x = (rng() % 10 == 0) ? 0.0 : ex(rng) * ex(rng);
    std::vector<std::int64_t> got(static_cast<std::size_t>(L));
    INFO("case " << it << " L " << L << " C " << C << " m " << m << " M " << M);
    REQUIRE(evict::error_aware_budgets(e.data(), L, C, m, M, got.data()) == Status::kSuccess);
    REQUIRE(std::accumulate(got.begin(), got.end(), std::int64_t{0}) == static_cast<std::int64_t>(L) * C);
    for (std::int64_t x : got) REQUIRE((x >= m && x <= M));
    REQUIRE(got == reference_budgets(e, C, m, M));
  }
}

TEST_CASE("head-subset window score == fp64 materialised attention of the selected heads", "[evict][compresskv]") {
  struct Case {
    int Hq, Hkv, D, w, N, kernel;
    bool avg, pad;
    std::vector<std::int32_t> heads;
  };
  const std::vector<Case> cases = {
      {8, 4, 8, 8, 200, 5, true, true, {0, 3, 5, 6}},  // stories260K shape
      {9, 3, 64, 8, 300, 5, true, true, {1, 2, 7}},    // SmolLM2 shape, two heads of KV group 0
      {6, 2, 16, 5, 40, 3, false, false, {4}},
      {4, 1, 16, 3, 7, 7, true, false, {0, 1, 2, 3}},  // N < kernel
  };
  std::uint32_t seed = 50;
  for (const Case& c : cases) {
    INFO("Hq " << c.Hq << " Hkv " << c.Hkv << " D " << c.D << " N " << c.N);
    const auto wqf = memattn_test::random_vector<float>(static_cast<std::size_t>(c.w * c.Hq * c.D), ++seed, 1.5f);
    std::vector<std::vector<float>> keys;
    std::vector<std::vector<double>> keysd;
    for (int h = 0; h < c.Hkv; ++h) {
      keys.push_back(memattn_test::random_vector<float>(static_cast<std::size_t>(c.N * c.D), ++seed, 1.5f));
      keysd.emplace_back(keys.back().begin(), keys.back().end());
    }
    std::vector<std::int32_t> kpos(static_cast<std::size_t>(c.N)), wpos(static_cast<std::size_t>(c.w));
    for (int j = 0; j < c.N; ++j) kpos[static_cast<std::size_t>(j)] = 2 * j;  // gaps: an earlier compaction
    for (int i = 0; i < c.w; ++i) wpos[static_cast<std::size_t>(i)] = kpos[static_cast<std::size_t>(c.N - c.w + i)];
    const std::int64_t n_cand = c.N - c.w;
    std::vector<const float*> kp;
    for (const auto& k : keys) kp.push_back(k.data());
    std::vector<float> out(static_cast<std::size_t>(c.N), -1.f);
    std::vector<float> scratch(cpu::head_subset_scratch_elems(c.w, c.D, c.N));
    std::vector<std::int64_t> vis(cpu::head_subset_visible_elems(c.w));
    REQUIRE(cpu::head_subset_window_scores(wqf.data(), wpos.data(), c.w, c.Hq, c.Hkv, c.D, kp.data(), kpos.data(), c.N,
                                           n_cand, c.heads.data(), static_cast<int>(c.heads.size()), c.kernel,
                                           c.avg ? evict::PoolKind::kAvg : evict::PoolKind::kMax, c.pad, out.data(),
                                           scratch.data(), vis.data()) == Status::kSuccess);
    const std::vector<double> want = reference_scores(std::vector<double>(wqf.begin(), wqf.end()), wpos, keysd, kpos, c.Hq,
                                                      c.Hkv, c.D, n_cand, c.heads, c.kernel, c.avg, c.pad);
    for (int j = 0; j < c.N; ++j) {
      INFO("j " << j);
      REQUIRE(std::abs(out[static_cast<std::size_t>(j)] - want[static_cast<std::size_t>(j)]) <=
              1e-5 * std::abs(want[static_cast<std::size_t>(j)]) + 1e-7);
    }
  }
  // bad arguments
  std::vector<float> out(4), scratch(cpu::head_subset_scratch_elems(2, 8, 4));
  std::vector<std::int64_t> vis(2);
  const std::vector<float> q(2 * 2 * 8, 0.f), k(4 * 8, 0.f);
  const float* kp[1] = {k.data()};
  const std::int32_t pos[4] = {0, 1, 2, 3}, wp[2] = {2, 3}, bad_head[1] = {5};
  CHECK(cpu::head_subset_window_scores(q.data(), wp, 2, 2, 1, 8, kp, pos, 4, 2, bad_head, 1, 3, evict::PoolKind::kAvg, true,
                                       out.data(), scratch.data(), vis.data()) == Status::kErrorInvalidArgument);
  CHECK(cpu::head_subset_window_scores(q.data(), wp, 2, 2, 1, 8, kp, pos, 4, 2, wp, 1, 4, evict::PoolKind::kAvg, true,
                                       out.data(), scratch.data(), vis.data()) == Status::kErrorInvalidArgument);
  CHECK(cpu::head_subset_window_scores<float, float>(nullptr, wp, 2, 2, 1, 8, kp, pos, 4, 2, wp, 1, 3, evict::PoolKind::kAvg,
                                                     true, out.data(), scratch.data(), vis.data()) == Status::kErrorNullPointer);
}

TEST_CASE("kv spec: text parameters (table=PATH) parse, resolve and print back", "[evict][compresskv]") {
  std::vector<cache::PolicySpec> parts;
  std::string err;
  REQUIRE(cache::parse_kv_spec("compresskv:budget=64,table=/tmp/a/b.table", &parts, &err) == Status::kSuccess);
  cache::ResolvedParams rp;
  REQUIRE(cache::resolve_params(parts[0], cpu::compresskv_policy_info(), &rp, &err) == Status::kSuccess);
  CHECK(rp.get_text("table") == "/tmp/a/b.table");
  CHECK(rp.get_int("budget") == 64);
  CHECK(rp.get_int("window") == 8);
  CHECK(cache::canonical_spec(cpu::compresskv_policy_info(), rp) ==
        "compresskv:budget=64,table=/tmp/a/b.table,window=8,kernel=5,pool=0,pad=1,heads=4,min=32,maxf=3");
  // not given: empty, and omitted from the canonical text
  REQUIRE(cache::parse_kv_spec("compresskv:budget=64", &parts, &err) == Status::kSuccess);
  REQUIRE(cache::resolve_params(parts[0], cpu::compresskv_policy_info(), &rp, &err) == Status::kSuccess);
  CHECK(rp.get_text("table").empty());
  CHECK(cache::canonical_spec(cpu::compresskv_policy_info(), rp).find("table") == std::string::npos);
  // numeric parameters still reject text
  REQUIRE(cache::parse_kv_spec("compresskv:budget=abc,table=x", &parts, &err) == Status::kSuccess);
  CHECK(cache::resolve_params(parts[0], cpu::compresskv_policy_info(), &rp, &err) == Status::kErrorInvalidArgument);
  CHECK(err.find("integer") != std::string::npos);
  CHECK(cache::parse_kv_spec("compresskv:table=", &parts, &err) == Status::kErrorParse);
}

TEST_CASE("compresskv cache: one keep set per layer from its retrieval heads, error-aware budgets, exact sum",
          "[evict][compresskv]") {
  cache::CacheShape s;
  s.layers = 3;
  s.q_heads = 6;
  s.kv_heads = 2;
  s.head_dim = 16;
  s.max_tokens = 400;
  s.max_sequences = 1;
  evict::CompressKvTable t = sample_table(3, 6, 2, 16, 5);
  t.layer_errors = {0.1, 0.6, 0.3};
  const std::string path = temp_path("cache.table");
  write_file(path, evict::format_compresskv_table(t));

  std::unique_ptr<cache::KvCache> base;
  std::string err;
  const std::string spec = "compresskv:budget=40,table=" + path + ",window=6,heads=2,min=10";
  REQUIRE(memattn_test::make_kv_cache(spec, s, Executor{}, &base, &err) == Status::kSuccess);
  auto* c = dynamic_cast<cpu::EvictKvCache<evict::CompressKV>*>(base.get());
  REQUIRE(c != nullptr);
  CHECK(std::string(c->spec()) == "compresskv:budget=40,table=" + path + ",window=6,kernel=5,pool=0,pad=1,heads=2,min=10,maxf=3");
  // budgets: 10 + round(e * (120 - 30)) = 19, 64, 37 (sum 120)
  CHECK(c->budget(0, 200) == 19);
  CHECK(c->budget(1, 200) == 64);
  CHECK(c->budget(2, 200) == 37);

  const std::int64_t n = 150, D = s.head_dim, Hq = s.q_heads, Hkv = s.kv_heads, w = 6;
  std::vector<std::vector<float>> Q, K;
  for (int l = 0; l < s.layers; ++l) {
    Q.push_back(memattn_test::random_vector<float>(static_cast<std::size_t>(n * Hq * D), 300 + l, 1.5f));
    K.push_back(memattn_test::random_vector<float>(static_cast<std::size_t>(n * Hkv * D), 400 + l, 1.5f));
    const auto V = memattn_test::random_vector<float>(static_cast<std::size_t>(n * Hkv * D), 500 + l);
    std::vector<float> out(static_cast<std::size_t>(n * Hq * D));
    REQUIRE(c->attend(0, l, make_view<3>(static_cast<const float*>(Q.back().data()), {n, Hq, D}),
                      make_view<3>(static_cast<const float*>(K.back().data()), {n, Hkv, D}),
                      make_view<3>(static_cast<const float*>(V.data()), {n, Hkv, D}), make_view<3>(out.data(), {n, Hq, D})) ==
            Status::kSuccess);
  }
  REQUIRE(c->end_chunk(0, {}) == Status::kSuccess);
  std::int64_t total = 0;
  for (int l = 0; l < s.layers; ++l) {
    INFO("layer " << l);
    const std::int64_t C = c->budget(l, n);
    const std::int64_t N = c->segment_size(0, l, 0);
    total += N;
    REQUIRE(N == C);
    const std::vector<std::int32_t> pos(c->segment_positions(0, l, 0), c->segment_positions(0, l, 0) + N);
    for (int h = 1; h < s.kv_heads; ++h) {
      REQUIRE(c->segment_size(0, l, h) == N);
      REQUIRE(std::vector<std::int32_t>(c->segment_positions(0, l, h), c->segment_positions(0, l, h) + N) == pos);
    }
    // fp64 reference selection: window queries and keys rounded to fp16 as the cache stores them
    std::vector<double> wq(static_cast<std::size_t>(w * Hq * D));
    for (std::int64_t i = 0; i < w * Hq * D; ++i)
      wq[static_cast<std::size_t>(i)] = to_float(from_float<Half>(Q[static_cast<std::size_t>(l)][static_cast<std::size_t>((n - w) * Hq * D + i)]));
    std::vector<std::vector<double>> keys(static_cast<std::size_t>(Hkv), std::vector<double>(static_cast<std::size_t>(n * D)));
    for (std::int64_t h = 0; h < Hkv; ++h)
      for (std::int64_t j = 0; j < n; ++j)
        for (std::int64_t d = 0; d < D; ++d)
          keys[static_cast<std::size_t>(h)][static_cast<std::size_t>(j * D + d)] =
              to_float(from_float<Half>(K[static_cast<std::size_t>(l)][static_cast<std::size_t>((j * Hkv + h) * D + d)]));
    std::vector<std::int32_t> kpos(static_cast<std::size_t>(n)), wpos(static_cast<std::size_t>(w));
    std::iota(kpos.begin(), kpos.end(), 0);
    std::iota(wpos.begin(), wpos.end(), static_cast<std::int32_t>(n - w));
    const std::vector<std::int32_t> heads = evict::retrieval_heads(t, l, 2);
    const std::vector<double> sc = reference_scores(wq, wpos, keys, kpos, static_cast<int>(Hq), static_cast<int>(Hkv),
                                                    static_cast<int>(D), n - w, heads, 5, true, true);
    std::vector<std::int32_t> order(static_cast<std::size_t>(n - w));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) { return sc[static_cast<std::size_t>(a)] > sc[static_cast<std::size_t>(b)]; });
    const std::int64_t k = C - w;
    const double kth = sc[static_cast<std::size_t>(order[static_cast<std::size_t>(k - 1)])];
    std::vector<std::int32_t> want(order.begin(), order.begin() + k);
    for (std::int64_t i = n - w; i < n; ++i) want.push_back(static_cast<std::int32_t>(i));
    std::sort(want.begin(), want.end());
    // tie-tolerant equality (§7.1): any difference must sit at the k-th score
    std::vector<std::int32_t> diff;
    std::set_symmetric_difference(pos.begin(), pos.end(), want.begin(), want.end(), std::back_inserter(diff));
    for (std::int32_t j : diff) REQUIRE(std::abs(sc[static_cast<std::size_t>(j)] - kth) <= 1e-4 * std::abs(kth));
  }
  CHECK(total == 3 * 40);
  CHECK(c->bytes() < cache::full_fp16_bytes(s, n) / 2);
  std::remove(path.c_str());
}

TEST_CASE("compresskv cache: missing, unreadable, corrupt or mismatched table -> Status and a message", "[evict][compresskv]") {
  cache::CacheShape s;
  s.layers = 3;
  s.q_heads = 6;
  s.kv_heads = 2;
  s.head_dim = 16;
  s.max_tokens = 400;
  std::unique_ptr<cache::KvCache> c;
  std::string err;
  CHECK(memattn_test::make_kv_cache("compresskv:budget=40", s, Executor{}, &c, &err) == Status::kErrorInvalidArgument);
  CHECK(err.find("table=PATH is required") != std::string::npos);
  CHECK(memattn_test::make_kv_cache("compresskv:budget=40,table=/nonexistent/x.table", s, Executor{}, &c, &err) ==
        Status::kErrorInvalidArgument);
  CHECK(err.find("cannot open") != std::string::npos);
  const std::string path = temp_path("bad.table");
  const std::string good = evict::format_compresskv_table(sample_table(3, 6, 2, 16, 8));
  write_file(path, good.substr(0, good.size() / 2));
  CHECK(memattn_test::make_kv_cache("compresskv:budget=40,table=" + path, s, Executor{}, &c, &err) == Status::kErrorParse);
  CHECK(err.find(path) != std::string::npos);
  CHECK(err.find("CompressKV table line") != std::string::npos);
  write_file(path, evict::format_compresskv_table(sample_table(4, 6, 2, 16, 8)));
  CHECK(memattn_test::make_kv_cache("compresskv:budget=40,table=" + path, s, Executor{}, &c, &err) == Status::kErrorInvalidShape);
  CHECK(err.find("shape") != std::string::npos);
  write_file(path, good);
  CHECK(memattn_test::make_kv_cache("compresskv:budget=4,table=" + path, s, Executor{}, &c, &err) == Status::kErrorInvalidArgument);
  CHECK(memattn_test::make_kv_cache("compresskv:budget=40,kernel=4,table=" + path, s, Executor{}, &c, &err) ==
        Status::kErrorInvalidArgument);
  CHECK(memattn_test::make_kv_cache("compresskv:budget=500,table=" + path, s, Executor{}, &c, &err) == Status::kErrorCapacityExceeded);
  CHECK(c == nullptr);
  std::remove(path.c_str());
}

// Synthetic case CompressKV is designed for (§7.3 G-b flavour): one retrieval head (query head 0)
// whose observation window looks for a needle, three heads (and every earlier prompt query)
// looking at a block of hub tokens. At equal budget, CompressKV with the table naming head 0 keeps
// the needle and beats H2O and the all-heads variant on the relative attention-output error of
// future queries that look for the needle (§7.4).
TEST_CASE("needle vs hubs: retrieval-head selection keeps the needle, beats H2O on output error", "[evict][compresskv]") {
  cache::CacheShape s;
  s.layers = 1;
  s.q_heads = 4;
  s.kv_heads = 2;
  s.head_dim = 16;
  s.max_tokens = 256;
  const std::int64_t n = 200, D = 16, Hq = 4, Hkv = 2, m = 16;
  std::mt19937 rng(11);
  std::normal_distribution<float> noise(0.f, 0.3f);
  // u: needle direction (channel 0), v: hub direction (channel 1)
  std::vector<float> q(static_cast<std::size_t>(n * Hq * D)), k(static_cast<std::size_t>(n * Hkv * D)),
      v(static_cast<std::size_t>(n * Hkv * D));
  for (auto& x : k) x = noise(rng);
  for (auto& x : v) x = 3.f * noise(rng);
  for (auto& x : q) x = noise(rng);
  auto is_needle = [](std::int64_t j) { return j >= 50 && j < 54; };
  auto is_hub = [](std::int64_t j) { return j >= 100 && j < 110; };
  for (std::int64_t j = 0; j < n; ++j)
    for (std::int64_t h = 0; h < Hkv; ++h) {
      if (is_needle(j)) k[static_cast<std::size_t>((j * Hkv + h) * D + 0)] += 4.f;
      if (is_hub(j)) k[static_cast<std::size_t>((j * Hkv + h) * D + 1)] += 4.f;
    }
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t h = 0; h < Hq; ++h) {
      const bool retrieval = i >= n - 8 && h == 0;
      q[static_cast<std::size_t>((i * Hq + h) * D + (retrieval ? 0 : 1))] += 3.f;
    }
  evict::CompressKvTable t = sample_table(1, 4, 2, 16, 12);
  t.head_scores = {0.9, 0.1, 0.2, 0.3};
  t.layer_errors = {1.0};
  const std::string path = temp_path("needle.table");
  write_file(path, evict::format_compresskv_table(t));

  // fp64 output of future queries (head 0, looking for the needle) over a set of kept positions
  std::vector<std::vector<float>> fq;
  for (std::int64_t i = 0; i < m; ++i) {
    std::vector<float> x(static_cast<std::size_t>(D));
    for (auto& e : x) e = noise(rng);
    x[0] += 6.f;  // the needle holds most of the mass of these queries
    fq.push_back(x);
  }
  auto outputs = [&](const std::vector<std::int32_t>& keep) {
    std::vector<double> o;
    for (const auto& x : fq) {
      std::vector<double> sc;
      double mx = -INFINITY;
      for (std::int32_t j : keep) {
        double a = 0;
        for (std::int64_t d = 0; d < D; ++d) a += x[static_cast<std::size_t>(d)] * k[static_cast<std::size_t>((j * Hkv + 0) * D + d)];
        sc.push_back(a / 4.0);
        mx = std::max(mx, sc.back());
      }
      double z = 0;
      for (double& e : sc) z += (e = std::exp(e - mx));
      for (std::int64_t d = 0; d < D; ++d) {
        double acc = 0;
        for (std::size_t r = 0; r < keep.size(); ++r) acc += sc[r] / z * v[static_cast<std::size_t>((keep[r] * Hkv + 0) * D + d)];
        o.push_back(acc);
      }
    }
    return o;
  };
  std::vector<std::int32_t> all(static_cast<std::size_t>(n));
  std::iota(all.begin(), all.end(), 0);
  const std::vector<double> full = outputs(all);
  auto run = [&](const std::string& spec) {
    std::unique_ptr<cache::KvCache> c;
    std::string err;
    INFO(spec << ": " << err);
    REQUIRE(memattn_test::make_kv_cache(spec, s, Executor{}, &c, &err) == Status::kSuccess);
    std::vector<float> out(q.size());
    REQUIRE(c->attend(0, 0, make_view<3>(static_cast<const float*>(q.data()), {n, Hq, D}),
                      make_view<3>(static_cast<const float*>(k.data()), {n, Hkv, D}),
                      make_view<3>(static_cast<const float*>(v.data()), {n, Hkv, D}), make_view<3>(out.data(), {n, Hq, D})) ==
            Status::kSuccess);
    REQUIRE(c->end_chunk(0, {}) == Status::kSuccess);
    std::vector<std::int32_t> keep;
    if (auto* ck = dynamic_cast<cpu::EvictKvCache<evict::CompressKV>*>(c.get()))
      keep.assign(ck->segment_positions(0, 0, 0), ck->segment_positions(0, 0, 0) + ck->segment_size(0, 0, 0));
    if (auto* ch = dynamic_cast<cpu::EvictKvCache<evict::H2O>*>(c.get()))
      keep.assign(ch->segment_positions(0, 0, 0), ch->segment_positions(0, 0, 0) + ch->segment_size(0, 0, 0));
    REQUIRE(keep.size() == 20u);
    const std::vector<double> o = outputs(keep);
    double num = 0, den = 0;
    for (std::size_t i = 0; i < o.size(); ++i) num += (o[i] - full[i]) * (o[i] - full[i]), den += full[i] * full[i];
    std::int64_t needles = 0;
    for (std::int32_t j : keep) needles += is_needle(j) ? 1 : 0;
    return std::make_pair(std::sqrt(num / den), needles);
  };
  const auto ckv = run("compresskv:budget=20,table=" + path + ",heads=1,min=1");
  const auto all_heads = run("compresskv:budget=20,table=" + path + ",heads=4,min=1");
  const auto h2o = run("h2o:budget=20,recent=8");
  INFO("errors: compresskv " << ckv.first << ", all heads " << all_heads.first << ", h2o " << h2o.first);
  CHECK(ckv.second == 4);
  CHECK(h2o.second < 4);
  CHECK(ckv.first < 0.25 * h2o.first);  // measured 0.10 vs 1.08 (all heads 0.81)
  CHECK(ckv.first < 0.5 * all_heads.first);
  std::remove(path.c_str());
}
