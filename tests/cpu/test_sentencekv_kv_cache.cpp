// SentenceKV (issue 6, spec eviction.md §3.14): the sentence choice against a brute-force greedy,
// every chunk's attended set and output against an fp64 model of the method (sentences, host pool,
// k̄, q̄, sinks, recent), the token-id boundary path, the G-g segments synthetic, device vs host
// bytes, bad parameters.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/kv_factory.hpp"
#include "common/test_data.hpp"
#include "memattn/cpu/sentencekv_kv_cache.hpp"

using namespace memattn;

namespace {

double fp16(float x) { return static_cast<double>(to_float(from_float<Half>(x))); }

cache::CacheShape shape(int layers, int hq, int hkv, int d, int max_tokens) {
  cache::CacheShape s;
  s.layers = layers;
  s.q_heads = hq;
  s.kv_heads = hkv;
  s.head_dim = d;
  s.max_tokens = max_tokens;
  return s;
}

// Brute-force greedy: (score desc, index asc), skip what does not fit.
std::vector<std::int32_t> naive_choose(const std::vector<double>& score, const std::vector<std::int64_t>& count,
                                       std::int64_t room) {
  std::vector<std::int32_t> idx;
  for (std::size_t s = 0; s < score.size(); ++s)
    if (count[s] > 0) idx.push_back(static_cast<std::int32_t>(s));
  std::stable_sort(idx.begin(), idx.end(), [&](std::int32_t a, std::int32_t b) { return score[static_cast<std::size_t>(a)] > score[static_cast<std::size_t>(b)]; });
  std::vector<std::int32_t> out;
  std::int64_t used = 0;
  for (std::int32_t s : idx) {
    if (used >= room) break;
    if (used + count[static_cast<std::size_t>(s)] > room) continue;
    used += count[static_cast<std::size_t>(s)];
    out.push_back(s);
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("choose_sentences equals the brute-force greedy (1,000 random cases, ties and empty sentences)") {
  std::mt19937 rng(3);
  for (int it = 0; it < 1000; ++it) {
    const std::int64_t n = rng() % 30;
    std::vector<float> score(static_cast<std::size_t>(n));
    std::vector<double> sd(static_cast<std::size_t>(n));
    std::vector<std::int64_t> count(static_cast<std::size_t>(n));
    for (std::int64_t s = 0; s < n; ++s) {
      score[static_cast<std::size_t>(s)] = static_cast<float>(static_cast<int>(rng() % 7) - 3) * 0.5f;  // many ties
      sd[static_cast<std::size_t>(s)] = score[static_cast<std::size_t>(s)];
      count[static_cast<std::size_t>(s)] = rng() % 4 == 0 ? 0 : 1 + rng() % 9;
    }
    const std::int64_t room = rng() % 40;
    std::vector<std::uint64_t> keys(static_cast<std::size_t>(n));
    std::vector<std::int32_t> chosen(static_cast<std::size_t>(n));
    std::int64_t k = 0, tokens = 0;
    REQUIRE(evict::choose_sentences(score.data(), count.data(), n, room, keys.data(), chosen.data(), &k, &tokens) == Status::kSuccess);
    const auto want = naive_choose(sd, count, room);
    CHECK(std::vector<std::int32_t>(chosen.begin(), chosen.begin() + k) == want);
    std::int64_t sum = 0;
    for (std::int32_t s : want) sum += count[static_cast<std::size_t>(s)];
    CHECK(tokens == sum);
    CHECK(tokens <= room);
  }
  std::int64_t k = 0, t = 0;
  CHECK(evict::choose_sentences(nullptr, nullptr, 3, 5, nullptr, nullptr, &k, &t) == Status::kErrorNullPointer);
  const float sc[1] = {1.f};
  const std::int64_t cnt[1] = {1};
  std::uint64_t key[1];
  std::int32_t ch[1];
  CHECK(evict::choose_sentences(sc, cnt, 1, -1, key, ch, &k, &t) == Status::kErrorInvalidArgument);
}

namespace {

// fp64 model of SentenceKV driven alongside the cache.
struct Model {
  cache::CacheShape s;
  cpu::SentenceKvConfig cfg;
  std::vector<std::vector<std::vector<std::vector<double>>>> K, V;  // [layer][head][pos][d]
  std::vector<std::vector<std::vector<double>>> qsum;              // [layer][head][d] partial sentence
  std::int64_t qcount = 0, len = 0;
  std::vector<std::int64_t> starts{0};

  explicit Model(const cache::CacheShape& sh, const cpu::SentenceKvConfig& c) : s(sh), cfg(c) {
    K.assign(static_cast<std::size_t>(s.layers), std::vector<std::vector<std::vector<double>>>(static_cast<std::size_t>(s.kv_heads)));
    V = K;
    qsum.assign(static_cast<std::size_t>(s.layers), std::vector<std::vector<double>>(static_cast<std::size_t>(s.kv_heads), std::vector<double>(static_cast<std::size_t>(s.head_dim), 0.0)));
  }
  std::int64_t n_sink() const { return std::min<std::int64_t>(cfg.sink, len); }
  std::int64_t host_end() const { return std::max(n_sink(), len - cfg.recent); }  // host = [sink, host_end)

  // Attended positions (ascending) of a chunk at (layer, head); qm: the chunk's GQA-mean queries [n][D].
  std::vector<std::int32_t> attended(int layer, int h, const std::vector<std::vector<double>>& qm) const {
    const std::int64_t D = s.head_dim, n = static_cast<std::int64_t>(qm.size());
    std::vector<double> qbar(static_cast<std::size_t>(D));
    for (std::int64_t d = 0; d < D; ++d) {
      double a = qsum[static_cast<std::size_t>(layer)][static_cast<std::size_t>(h)][static_cast<std::size_t>(d)];
      for (const auto& r : qm) a += r[static_cast<std::size_t>(d)];
      qbar[static_cast<std::size_t>(d)] = a / static_cast<double>(qcount + n);
    }
    const std::int64_t S = static_cast<std::int64_t>(starts.size()), he = host_end();
    std::vector<double> score(static_cast<std::size_t>(S), 0.0);
    std::vector<std::int64_t> count(static_cast<std::size_t>(S), 0), lo(static_cast<std::size_t>(S)), hi(static_cast<std::size_t>(S));
    for (std::int64_t si = 0; si < S; ++si) {
      lo[static_cast<std::size_t>(si)] = std::max<std::int64_t>(starts[static_cast<std::size_t>(si)], cfg.sink);
      hi[static_cast<std::size_t>(si)] = std::min<std::int64_t>(si + 1 < S ? starts[static_cast<std::size_t>(si + 1)] : he, he);
      count[static_cast<std::size_t>(si)] = std::max<std::int64_t>(0, hi[static_cast<std::size_t>(si)] - lo[static_cast<std::size_t>(si)]);
      for (std::int64_t p = lo[static_cast<std::size_t>(si)]; p < hi[static_cast<std::size_t>(si)]; ++p)
        for (std::int64_t d = 0; d < D; ++d)
          score[static_cast<std::size_t>(si)] += K[static_cast<std::size_t>(layer)][static_cast<std::size_t>(h)][static_cast<std::size_t>(p)][static_cast<std::size_t>(d)] * qbar[static_cast<std::size_t>(d)];
      if (count[static_cast<std::size_t>(si)] > 0) score[static_cast<std::size_t>(si)] /= static_cast<double>(count[static_cast<std::size_t>(si)]);
    }
    std::vector<std::int32_t> pos;
    for (std::int64_t p = 0; p < n_sink(); ++p) pos.push_back(static_cast<std::int32_t>(p));
    for (std::int32_t si : naive_choose(score, count, cfg.budget - cfg.sink - cfg.recent))
      for (std::int64_t p = lo[static_cast<std::size_t>(si)]; p < hi[static_cast<std::size_t>(si)]; ++p) pos.push_back(static_cast<std::int32_t>(p));
    for (std::int64_t p = he; p < len + n; ++p) pos.push_back(static_cast<std::int32_t>(p));
    return pos;
  }
};

struct Stream {
  std::vector<float> q, k, v;
  std::vector<std::uint8_t> ends;
  std::vector<std::int32_t> ids;
};

}  // namespace

TEST_CASE("SentenceKV: attended sets and outputs equal the fp64 model, chunk by chunk") {
  const auto s = shape(2, 4, 2, 8, 300);
  cpu::SentenceKvConfig cfg;
  cfg.budget = 20;
  cfg.sink = 3;
  cfg.recent = 4;
  std::unique_ptr<cpu::SentenceKvCache<Half>> c;
  REQUIRE(cpu::SentenceKvCache<Half>::create(s, cfg, "sentencekv", Executor{}, &c) == Status::kSuccess);
  REQUIRE(c->reserve(0, 300) == Status::kSuccess);  // host pools sized once: 300 - sink - recent rows
  CHECK(c->reserve(0, 301) == Status::kErrorCapacityExceeded);
  Model m(s, cfg);
  std::mt19937 rng(21);
  const std::int64_t D = s.head_dim, Hkv = s.kv_heads, G = s.q_heads / Hkv;
  std::uint32_t seed = 50;
  int chunks = 0;
  while (m.len < 220) {
    const std::int64_t n = rng() % 9 == 0 ? 12 : 1 + rng() % 4;
    std::vector<std::uint8_t> ends(static_cast<std::size_t>(n));
    for (auto& e : ends) e = rng() % 7 == 0;
    for (int layer = 0; layer < s.layers; ++layer) {
      auto q = memattn_test::random_vector<float>(static_cast<std::size_t>(n * s.q_heads * D), seed++, 1.5f);
      auto k = memattn_test::random_vector<float>(static_cast<std::size_t>(n * Hkv * D), seed++, 1.5f);
      auto v = memattn_test::random_vector<float>(static_cast<std::size_t>(n * Hkv * D), seed++);
      std::vector<float> out(q.size(), 0.f);
      std::vector<std::vector<std::vector<double>>> qm(static_cast<std::size_t>(Hkv));
      for (std::int64_t h = 0; h < Hkv; ++h) {
        for (std::int64_t t = 0; t < n; ++t) {
          std::vector<double> r(static_cast<std::size_t>(D), 0.0);
          for (std::int64_t g = 0; g < G; ++g)
            for (std::int64_t d = 0; d < D; ++d) r[static_cast<std::size_t>(d)] += q[static_cast<std::size_t>((t * s.q_heads + h * G + g) * D + d)] / static_cast<double>(G);
          qm[static_cast<std::size_t>(h)].push_back(r);
          std::vector<double> kr, vr;
          for (std::int64_t d = 0; d < D; ++d) {
            kr.push_back(fp16(k[static_cast<std::size_t>((t * Hkv + h) * D + d)]));
            vr.push_back(fp16(v[static_cast<std::size_t>((t * Hkv + h) * D + d)]));
          }
          m.K[static_cast<std::size_t>(layer)][static_cast<std::size_t>(h)].push_back(kr);
          m.V[static_cast<std::size_t>(layer)][static_cast<std::size_t>(h)].push_back(vr);
        }
      }
      REQUIRE(c->attend(0, layer, make_view<3>(static_cast<const float*>(q.data()), {n, s.q_heads, D}),
                        make_view<3>(static_cast<const float*>(k.data()), {n, Hkv, D}),
                        make_view<3>(static_cast<const float*>(v.data()), {n, Hkv, D}),
                        make_view<3>(out.data(), {n, s.q_heads, D})) == Status::kSuccess);
      for (std::int64_t h = 0; h < Hkv; ++h) {
        const auto want = m.attended(layer, static_cast<int>(h), qm[static_cast<std::size_t>(h)]);
        REQUIRE(c->attended_positions(0, layer, static_cast<int>(h)) == want);
        CHECK(static_cast<std::int64_t>(want.size()) <= cfg.budget + n);
        // output: fp64 attention over `want`, causal inside the chunk
        const auto& KK = m.K[static_cast<std::size_t>(layer)][static_cast<std::size_t>(h)];
        const auto& VV = m.V[static_cast<std::size_t>(layer)][static_cast<std::size_t>(h)];
        for (std::int64_t t = 0; t < n; ++t)
          for (std::int64_t g = 0; g < G; ++g) {
            const float* qr = q.data() + (t * s.q_heads + h * G + g) * D;
            std::vector<double> sc;
            double mx = -INFINITY, l = 0;
            for (std::int32_t p : want) {
              if (p > m.len + t) break;
              double a = 0;
              for (std::int64_t d = 0; d < D; ++d) a += qr[d] * KK[static_cast<std::size_t>(p)][static_cast<std::size_t>(d)];
              sc.push_back(a / std::sqrt(static_cast<double>(D)));
              mx = std::max(mx, sc.back());
            }
            for (double& x : sc) l += (x = std::exp(x - mx));
            for (std::int64_t d = 0; d < D; ++d) {
              double o = 0;
              for (std::size_t j = 0; j < sc.size(); ++j) o += sc[j] / l * VV[static_cast<std::size_t>(want[j])][static_cast<std::size_t>(d)];
              CHECK(std::abs(out[static_cast<std::size_t>((t * s.q_heads + h * G + g) * D + d)] - o) <= 2e-5 + 2e-5 * std::abs(o));
            }
          }
        // partial-sentence query sums advance with the chunk
        for (std::int64_t t = 0; t < n; ++t) {
          auto& qs = m.qsum[static_cast<std::size_t>(layer)][static_cast<std::size_t>(h)];
          for (std::int64_t d = 0; d < D; ++d) qs[static_cast<std::size_t>(d)] += qm[static_cast<std::size_t>(h)][static_cast<std::size_t>(t)][static_cast<std::size_t>(d)];
          if (ends[static_cast<std::size_t>(t)]) std::fill(qs.begin(), qs.end(), 0.0);
        }
      }
    }
    cache::ChunkSignals sig;
    sig.sentence_ends = ends.data();
    sig.count = static_cast<int>(n);
    REQUIRE(c->end_chunk(0, sig) == Status::kSuccess);
    for (std::int64_t t = 0; t < n; ++t) {
      m.qcount = ends[static_cast<std::size_t>(t)] ? 0 : m.qcount + 1;
      if (ends[static_cast<std::size_t>(t)]) m.starts.push_back(m.len + t + 1);
    }
    m.len += n;
    ++chunks;
    CHECK(c->host_tokens(0, 0) == m.host_end() - m.n_sink());
    // host pool rows are the original (fp16) keys
    if (m.host_end() > m.n_sink()) {
      const std::int64_t p = m.n_sink() + static_cast<std::int64_t>(rng() % static_cast<std::uint32_t>(m.host_end() - m.n_sink()));
      const Half* hk = c->host_key(0, 1, 1, p);
      REQUIRE(hk != nullptr);
      CHECK(to_float(hk[3]) == m.K[1][1][static_cast<std::size_t>(p)][3]);
    }
  }
  CHECK(c->sentence_count(0) == static_cast<std::int64_t>(m.starts.size()));
  // device bytes: the budget-sized buffers + sentence sums; host: the pool
  const std::size_t row = 2 * static_cast<std::size_t>(D) * 2 + 4;
  CHECK(c->host_bytes() == static_cast<std::size_t>(s.layers * Hkv * (300 - cfg.sink - cfg.recent)) * 2 * D * 2 +
                              m.starts.size() * sizeof(std::int64_t));
  CHECK(c->bytes() < static_cast<std::size_t>(s.layers * Hkv) * ((cfg.budget + 12 + 32) * row + static_cast<std::size_t>(c->sentence_count(0) + 1) * D * 4) + static_cast<std::size_t>(s.layers * 12 * Hkv * D * 4));
  CHECK(c->peak_bytes() >= c->bytes());
  CHECK(chunks > 40);
}

TEST_CASE("SentenceKV: token ids + sentence_end_ids give the same boundaries as the sentence_ends flags") {
  const auto s = shape(1, 2, 1, 8, 200);
  auto run = [&](bool by_ids) {
    cpu::SentenceKvConfig cfg;
    cfg.budget = 16;
    cfg.sink = 2;
    cfg.recent = 3;
    cfg.sentence_end_ids = {7, 9};
    std::unique_ptr<cpu::SentenceKvCache<Half>> c;
    REQUIRE(cpu::SentenceKvCache<Half>::create(s, cfg, "sentencekv", Executor{}, &c) == Status::kSuccess);
    std::mt19937 rng(5);
    std::vector<float> all;
    for (int i = 0; i < 60; ++i) {
      const std::int64_t n = 1 + i % 3;
      std::vector<std::int32_t> ids(static_cast<std::size_t>(n));
      std::vector<std::uint8_t> ends(static_cast<std::size_t>(n));
      for (std::int64_t t = 0; t < n; ++t) {
        ids[static_cast<std::size_t>(t)] = static_cast<std::int32_t>(rng() % 12);
        ends[static_cast<std::size_t>(t)] = ids[static_cast<std::size_t>(t)] == 7 || ids[static_cast<std::size_t>(t)] == 9;
      }
      auto q = memattn_test::random_vector<float>(static_cast<std::size_t>(n * 2 * 8), 900u + static_cast<std::uint32_t>(i), 1.5f);
      auto k = memattn_test::random_vector<float>(static_cast<std::size_t>(n * 8), 1900u + static_cast<std::uint32_t>(i), 1.5f);
      auto v = memattn_test::random_vector<float>(static_cast<std::size_t>(n * 8), 2900u + static_cast<std::uint32_t>(i));
      std::vector<float> out(q.size());
      REQUIRE(c->attend(0, 0, make_view<3>(static_cast<const float*>(q.data()), {n, 2, 8}), make_view<3>(static_cast<const float*>(k.data()), {n, 1, 8}),
                        make_view<3>(static_cast<const float*>(v.data()), {n, 1, 8}), make_view<3>(out.data(), {n, 2, 8})) == Status::kSuccess);
      all.insert(all.end(), out.begin(), out.end());
      cache::ChunkSignals sig;
      sig.count = static_cast<int>(n);
      if (by_ids) sig.token_ids = ids.data();
      else sig.sentence_ends = ends.data();
      REQUIRE(c->end_chunk(0, sig) == Status::kSuccess);
    }
    CHECK(c->sentence_count(0) > 5);
    return all;
  };
  CHECK(run(true) == run(false));
}

// G-g (spec §7.3): sentences of Poisson(12) tokens with keys μ_s + noise; a query aligned with μ_{s*}
// fetches s* whole.
TEST_CASE("SentenceKV: G-g segments synthetic fetches the sentence the query is about") {
  const int D = 32;
  const auto s = shape(1, 1, 1, D, 2000);
  std::mt19937 rng(17);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::poisson_distribution<int> pl(12);
  const int S = 24;
  std::vector<std::vector<float>> mu(S, std::vector<float>(D));
  for (auto& m : mu) {
    float nrm = 0;
    for (float& x : m) {
      x = nd(rng);
      nrm += x * x;
    }
    for (float& x : m) x *= 2.f / std::sqrt(nrm);
  }
  cpu::SentenceKvConfig cfg;
  cfg.budget = 48;
  cfg.sink = 4;
  cfg.recent = 8;  // room 36 >= any sentence here
  for (int target : {1, 7, 15, 20}) {
    std::unique_ptr<cpu::SentenceKvCache<Half>> c;
    REQUIRE(cpu::SentenceKvCache<Half>::create(s, cfg, "sentencekv", Executor{}, &c) == Status::kSuccess);
    std::mt19937 lens(99);
    std::int64_t pos = 0, t_lo = 0, t_hi = 0;
    for (int si = 0; si < S; ++si) {
      const int L = std::max(2, std::min(30, pl(lens)));
      if (si == target) t_lo = pos, t_hi = pos + L;
      for (int i = 0; i < L; ++i, ++pos) {
        std::vector<float> q(D), k(D), v(D), o(D);
        for (int d = 0; d < D; ++d) {
          q[static_cast<std::size_t>(d)] = nd(rng) * 0.3f;
          k[static_cast<std::size_t>(d)] = mu[static_cast<std::size_t>(si)][static_cast<std::size_t>(d)] + 0.3f * nd(rng) / std::sqrt(static_cast<float>(D));
          v[static_cast<std::size_t>(d)] = nd(rng);
        }
        REQUIRE(c->attend(0, 0, make_view<3>(static_cast<const float*>(q.data()), {1, 1, D}), make_view<3>(static_cast<const float*>(k.data()), {1, 1, D}),
                          make_view<3>(static_cast<const float*>(v.data()), {1, 1, D}), make_view<3>(o.data(), {1, 1, D})) == Status::kSuccess);
        const std::uint8_t end = i == L - 1;
        cache::ChunkSignals sig;
        sig.sentence_ends = &end;
        sig.count = 1;
        REQUIRE(c->end_chunk(0, sig) == Status::kSuccess);
      }
    }
    std::vector<float> q(D), k(D), v(D), o(D);
    for (int d = 0; d < D; ++d) {
      q[static_cast<std::size_t>(d)] = 3.f * mu[static_cast<std::size_t>(target)][static_cast<std::size_t>(d)];
      k[static_cast<std::size_t>(d)] = nd(rng);
      v[static_cast<std::size_t>(d)] = nd(rng);
    }
    REQUIRE(c->attend(0, 0, make_view<3>(static_cast<const float*>(q.data()), {1, 1, D}), make_view<3>(static_cast<const float*>(k.data()), {1, 1, D}),
                      make_view<3>(static_cast<const float*>(v.data()), {1, 1, D}), make_view<3>(o.data(), {1, 1, D})) == Status::kSuccess);
    const auto att = c->attended_positions(0, 0, 0);
    INFO("target sentence " << target << " at [" << t_lo << ", " << t_hi << ")");
    for (std::int64_t p = std::max<std::int64_t>(t_lo, cfg.sink); p < t_hi; ++p)
      CHECK(std::find(att.begin(), att.end(), static_cast<std::int32_t>(p)) != att.end());
    CHECK(static_cast<std::int64_t>(att.size()) <= cfg.budget + 1);
    CHECK(c->host_bytes() > c->bytes());  // most of the history lives on the host
  }
}

TEST_CASE("SentenceKV: bad parameters and bad calls return a Status") {
  const auto s = shape(1, 2, 1, 8, 100);
  std::unique_ptr<cache::KvCache> c;
  std::string why;
  CHECK(memattn_test::make_kv_cache("sentencekv:budget=1", s, Executor{}, &c, &why) != Status::kSuccess);
  CHECK(memattn_test::make_kv_cache("sentencekv:budget=200", s, Executor{}, &c, &why) == Status::kErrorCapacityExceeded);
  CHECK(memattn_test::make_kv_cache("sentencekv:budget=16,sink=8,recent=8", s, Executor{}, &c, &why) == Status::kErrorInvalidArgument);
  CHECK(c == nullptr);
  REQUIRE(memattn_test::make_kv_cache("sentencekv:budget=16", s, Executor{}, &c, &why) == Status::kSuccess);
  CHECK(std::string(c->spec()) .find("sentencekv") == 0);
  CHECK((c->wanted_signals() & cache::kSignalSentenceEnds) != 0);
  std::vector<float> q(2 * 8, 0.5f), k(8, 0.5f), v(8, 0.5f), o(16);
  REQUIRE(c->attend(0, 0, make_view<3>(static_cast<const float*>(q.data()), {1, 2, 8}), make_view<3>(static_cast<const float*>(k.data()), {1, 1, 8}),
                    make_view<3>(static_cast<const float*>(v.data()), {1, 1, 8}), make_view<3>(o.data(), {1, 2, 8})) == Status::kSuccess);
  CHECK(c->attend(0, 0, make_view<3>(static_cast<const float*>(q.data()), {1, 2, 8}), make_view<3>(static_cast<const float*>(k.data()), {1, 1, 8}),
                  make_view<3>(static_cast<const float*>(v.data()), {1, 1, 8}), make_view<3>(o.data(), {1, 2, 8})) == Status::kErrorInvalidArgument);
  const std::uint8_t ends[2] = {0, 1};
  cache::ChunkSignals sig;
  sig.sentence_ends = ends;
  sig.count = 2;  // chunk has 1 token
  CHECK(c->end_chunk(0, sig) == Status::kErrorInvalidShape);
  CHECK(c->tokens(0) == 0);
  sig.count = 1;
  CHECK(c->end_chunk(0, sig) == Status::kSuccess);
  CHECK(c->tokens(0) == 1);
}
