// MiKV mixed-precision cache (issue 7 part 2): per-token row format and its bound, the channel
// balancer (round trip, gain on outlier channels), the Tiered selector against a sort-based
// reference, the cache's one-softmax decode against fp64 attention over the dequantised mixed cache
// (every tier, causal chunk), tier invariants (exact budgets, sinks/recent exact, monotone
// precision), byte budgets, bad inputs; the lowk=1 Low tier exported in the CUDA decode's block
// layout (what tests/gpu/test_mikv_cuda.cu uploads) and its CPU reference.
// Built twice: portable, and as test_mikv_avx2 (-mavx2 -mfma -mf16c), whose decode steps read the
// tiers in place (cpu/mikv_decode.hpp: codes through the KIVI block kernels, exact rows as fp16).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/kv_factory.hpp"
#include "common/mikv_block_export.hpp"
#include "common/naive_attention.hpp"
#include "common/test_data.hpp"
#include "memattn/cpu/evict_tiered.hpp"
#include "memattn/cpu/mikv_kv_cache.hpp"
#include "memattn/quant/mixed.hpp"

using namespace memattn;

namespace {

std::vector<Half> to_half(const std::vector<float>& x) {
  std::vector<Half> h(x.size());
  for (std::size_t i = 0; i < x.size(); ++i) h[i] = float_to_half(x[i]);
  return h;
}

}  // namespace

TEST_CASE("mixed row layout: bytes per token", "[mikv]") {
  auto bytes = [](int D, int b) { return quant::mixed_row_layout(quant::MixedRowConfig{D, b, 2}).bytes; };
  CHECK(bytes(64, 2) == 48);
  CHECK(bytes(64, 3) == 72);  // 10 codes per word
  CHECK(bytes(64, 4) == 80);
  CHECK(bytes(64, 8) == 144);
  CHECK(bytes(128, 2) == 80);
  CHECK(bytes(8, 2) == 24);
  CHECK(quant::MixedRowConfig{64, 5, 2}.validate() == Status::kErrorInvalidArgument);
  CHECK(quant::MixedRowConfig{12, 2, 2}.validate() == Status::kErrorUnsupportedHeadDim);
}

TEST_CASE("mixed row quantiser: |x - x^| <= s/2 per group, groups of D/2", "[mikv]") {
  for (int bits : {2, 3, 4, 8}) {
    for (int D : {8, 64, 128}) {
      const quant::MixedRowConfig cfg{D, bits, 2};
      const auto lay = quant::mixed_row_layout(cfg);
      std::vector<std::uint32_t> rec(lay.bytes / 4);
      for (std::uint32_t seed = 0; seed < 20; ++seed) {
        auto k = to_half(memattn_test::random_vector<float>(static_cast<std::size_t>(D), seed * 7 + 1, 3.f));
        auto v = to_half(memattn_test::random_vector<float>(static_cast<std::size_t>(D), seed * 7 + 2));
        REQUIRE(quant::quantize_row(cfg, k.data(), v.data(), reinterpret_cast<std::uint8_t*>(rec.data())) == quant::kQuantOk);
        const quant::MixedRowView r{reinterpret_cast<const std::uint8_t*>(rec.data()), cfg, lay};
        for (int c = 0; c < D; ++c) {
          const int j = c / (D / 2);
          const double sk = quant::half_to_double(r.k_meta(j).scale), sv = quant::half_to_double(r.v_meta(j).scale);
          REQUIRE(r.k_code(c) <= static_cast<std::uint32_t>(cfg.levels()));
          REQUIRE(std::fabs(r.k_balanced(c) - half_to_float(k[c])) <= sk * (0.5 + 1e-6));
          REQUIRE(std::fabs(r.v(c) - half_to_float(v[c])) <= sv * (0.5 + 1e-6));
        }
        // group j's range covers only its own channels: a spike in group 1 leaves group 0's scale alone
        std::vector<Half> k2 = k;
        k2[static_cast<std::size_t>(D - 1)] = float_to_half(1000.f);
        std::vector<std::uint32_t> rec2(lay.bytes / 4);
        quant::quantize_row(cfg, k2.data(), v.data(), reinterpret_cast<std::uint8_t*>(rec2.data()));
        const quant::MixedRowView r2{reinterpret_cast<const std::uint8_t*>(rec2.data()), cfg, lay};
        REQUIRE(r2.k_meta(0).scale.bits == r.k_meta(0).scale.bits);
      }
    }
  }
}

TEST_CASE("channel balancer: factor, power of two, guard", "[mikv]") {
  CHECK(quant::balancer_factor(0.f, 3.f, false) == 1.f);
  CHECK(quant::balancer_factor(3.f, 0.f, false) == 1.f);
  CHECK(quant::balancer_factor(4.f, 1.f, false) == 2.f);
  CHECK(quant::balancer_factor(2.9f, 25.f, false) == 0.25f);               // spec §8.5 example: b = 1/4
  CHECK(quant::balancer_factor(2.9f, 25.f, true) == Approx(std::sqrt(2.9 / 25.0)).epsilon(1e-6));
  CHECK(quant::balancer_factor(1e9f, 1e-9f, false) == 256.f);              // clamp 2^8
  CHECK(quant::balancer_factor(1e-9f, 1e9f, false) == 0x1p-8f);            // clamp 2^-8
  const float b = quant::balancer_factor(60000.f, 200.f, false);           // sqrt(300) -> 16, 200*16 <= 2^14
  CHECK(b == 16.f);
  CHECK(quant::balancer_factor(1e6f, 10000.f, false) == 1.f);              // 10 -> 8, guard: 10000*b <= 16384
}

// Q-E6 analogue (quantization.md §10.4 generator, per-token 2-bit K): the power-of-two balancer
// lowers the logit RMS error on held-out queries >= 2x; dequantised keys divided by b round-trip
// within s/(2b) of the fp16 key.
TEST_CASE("channel balancer: round trip and >= 2x lower logit error on outlier channels", "[mikv]") {
  const int D = 128, T = 512, NQ = 256;
  std::mt19937 rng(1234);
  std::normal_distribution<double> n01(0, 1);
  std::vector<int> outlier = {5, 40, 77, 100};
  std::vector<float> K(static_cast<std::size_t>(T * D));
  for (int t = 0; t < T; ++t)
    for (int c = 0; c < D; ++c) {
      double x = n01(rng);
      for (std::size_t o = 0; o < outlier.size(); ++o)
        if (c == outlier[o]) x = (o % 2 ? -15 : 15) + 3 * n01(rng);
      K[static_cast<std::size_t>(t * D + c)] = half_to_float(float_to_half(static_cast<float>(x)));
    }
  auto queries = [&](int n) {
    std::vector<double> q(static_cast<std::size_t>(n * D));
    for (double& x : q) x = n01(rng);
    return q;
  };
  const auto qcal = queries(NQ), qtest = queries(NQ);
  std::vector<float> bal(D, 1.f);
  for (int c = 0; c < D; ++c) {
    double qm = 0, km = 0;
    for (int i = 0; i < NQ; ++i) qm = std::max(qm, std::fabs(qcal[static_cast<std::size_t>(i * D + c)]));
    for (int t = 0; t < T; ++t) km = std::max(km, static_cast<double>(std::fabs(K[static_cast<std::size_t>(t * D + c)])));
    bal[static_cast<std::size_t>(c)] = quant::balancer_factor(static_cast<float>(qm), static_cast<float>(km), false);
  }
  CHECK(bal[5] == 0.25f);
  const quant::MixedRowConfig cfg{D, 2, 2};
  const auto lay = quant::mixed_row_layout(cfg);
  std::vector<std::uint32_t> rec(lay.bytes / 4);
  double err_plain = 0, err_bal = 0;
  for (int t = 0; t < T; ++t) {
    std::vector<double> khat[2];
    for (int use = 0; use < 2; ++use) {
      std::vector<Half> kb(static_cast<std::size_t>(D)), v(static_cast<std::size_t>(D), Half{0});
      for (int c = 0; c < D; ++c)
        kb[static_cast<std::size_t>(c)] = float_to_half(K[static_cast<std::size_t>(t * D + c)] * (use ? bal[static_cast<std::size_t>(c)] : 1.f));
      quant::quantize_row(cfg, kb.data(), v.data(), reinterpret_cast<std::uint8_t*>(rec.data()));
      const quant::MixedRowView r{reinterpret_cast<const std::uint8_t*>(rec.data()), cfg, lay};
      for (int c = 0; c < D; ++c) {
        const double b = use ? bal[static_cast<std::size_t>(c)] : 1.0;
        const double x = r.k_balanced(c) / b;
        const double s = quant::half_to_double(r.k_meta(c / (D / 2)).scale);
        REQUIRE(std::fabs(x - K[static_cast<std::size_t>(t * D + c)]) <= s / (2 * b) * (1 + 1e-6));
        khat[use].push_back(x);
      }
    }
    for (int i = 0; i < 32; ++i) {
      double e0 = 0, e1 = 0;
      for (int c = 0; c < D; ++c) {
        const double q = qtest[static_cast<std::size_t>(i * D + c)], k = K[static_cast<std::size_t>(t * D + c)];
        e0 += q * (khat[0][static_cast<std::size_t>(c)] - k);
        e1 += q * (khat[1][static_cast<std::size_t>(c)] - k);
      }
      err_plain += e0 * e0;
      err_bal += e1 * e1;
    }
  }
  INFO("logit RMS error ratio plain/balanced = " << std::sqrt(err_plain / err_bal));
  CHECK(std::sqrt(err_plain / err_bal) >= 2.0);
}

// ---- Tiered selector ------------------------------------------------------------------------

namespace {
// Sort-based reference of evict/tiered.hpp's rule.
std::vector<evict::Tier> naive_tiers(const std::vector<float>& s, const std::vector<std::int32_t>& pos,
                                     const std::vector<evict::Tier>& cur, std::int32_t t_cur, evict::Protection pr,
                                     evict::TierBudget b) {
  using evict::Tier;
  const std::size_t n = s.size();
  std::vector<Tier> out = cur;
  auto better = [&](std::size_t a, std::size_t c) {  // higher score, then earlier position
    if (s[a] != s[c]) return s[a] > s[c];
    return pos[a] < pos[c];
  };
  std::vector<std::size_t> hi, rest;
  std::int64_t prot = 0;
  for (std::size_t j = 0; j < n; ++j) {
    if (cur[j] != Tier::kHigh) continue;
    if (evict::is_protected(pos[j], t_cur, pr)) ++prot;
    else hi.push_back(j);
  }
  std::sort(hi.begin(), hi.end(), better);
  if (b.high_tokens >= 0)
    for (std::size_t i = static_cast<std::size_t>(std::max<std::int64_t>(0, b.high_tokens - prot)); i < hi.size(); ++i)
      out[hi[i]] = Tier::kLow;
  for (std::size_t j = 0; j < n; ++j)
    if (out[j] == Tier::kLow) rest.push_back(j);
  std::sort(rest.begin(), rest.end(), better);
  if (b.low_tokens >= 0)
    for (std::size_t i = static_cast<std::size_t>(b.low_tokens); i < rest.size(); ++i) out[rest[i]] = Tier::kEvict;
  return out;
}
}  // namespace

TEST_CASE("Tiered selector == sort-based reference; monotone, exact budgets, sinks high", "[mikv]") {
  std::mt19937 rng(7);
  for (int it = 0; it < 2000; ++it) {
    const int n = 1 + static_cast<int>(rng() % 60);
    std::vector<float> s(static_cast<std::size_t>(n));
    std::vector<std::int32_t> pos(static_cast<std::size_t>(n));
    std::vector<evict::Tier> cur(static_cast<std::size_t>(n));
    std::vector<std::int32_t> perm(static_cast<std::size_t>(n + 20));
    for (std::size_t i = 0; i < perm.size(); ++i) perm[i] = static_cast<std::int32_t>(i);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int j = 0; j < n; ++j) {
      s[static_cast<std::size_t>(j)] = static_cast<float>(rng() % 5) * 0.25f;  // many ties
      pos[static_cast<std::size_t>(j)] = perm[static_cast<std::size_t>(j)];
      cur[static_cast<std::size_t>(j)] = rng() % 3 == 0 ? evict::Tier::kLow : evict::Tier::kHigh;
    }
    const std::int32_t t_cur = n + 19;
    const evict::Protection pr{static_cast<std::int32_t>(rng() % 4), static_cast<std::int32_t>(rng() % 8)};
    // protected tokens are High in a real cache
    for (int j = 0; j < n; ++j)
      if (evict::is_protected(pos[static_cast<std::size_t>(j)], t_cur, pr)) cur[static_cast<std::size_t>(j)] = evict::Tier::kHigh;
    evict::TierBudget b{static_cast<std::int64_t>(rng() % 30) - 3, static_cast<std::int64_t>(rng() % 30) - 3};
    std::vector<evict::Tier> out(static_cast<std::size_t>(n));
    cpu::TierScratch sc;
    REQUIRE(cpu::assign_tiers(s.data(), pos.data(), cur.data(), n, t_cur, pr, evict::TieBreak::kPreferEarlier, b, &sc,
                              out.data()) == Status::kSuccess);
    REQUIRE(out == naive_tiers(s, pos, cur, t_cur, pr, b));
    std::int64_t nh = 0, nl = 0, prot = 0;
    for (int j = 0; j < n; ++j) {
      const auto o = out[static_cast<std::size_t>(j)], c = cur[static_cast<std::size_t>(j)];
      REQUIRE(static_cast<int>(o) >= static_cast<int>(c));  // monotone
      const bool p = evict::is_protected(pos[static_cast<std::size_t>(j)], t_cur, pr);
      if (p) REQUIRE(o == evict::Tier::kHigh);
      prot += p;
      nh += o == evict::Tier::kHigh;
      nl += o == evict::Tier::kLow;
    }
    if (b.high_tokens >= 0) REQUIRE(nh <= std::max<std::int64_t>(b.high_tokens, prot));
    if (b.low_tokens >= 0) REQUIRE(nl <= b.low_tokens);
  }
  // NaN scores among ranked candidates are an error and write nothing
  std::vector<float> s = {1.f, NAN, 2.f};
  std::vector<std::int32_t> pos = {10, 11, 12};
  std::vector<evict::Tier> cur(3, evict::Tier::kHigh), out(3, evict::Tier::kEvict);
  cpu::TierScratch sc;
  CHECK(cpu::assign_tiers(s.data(), pos.data(), cur.data(), 3, 12, evict::Protection{0, 0}, evict::TieBreak::kPreferEarlier,
                          evict::TierBudget{1, -1}, &sc, out.data()) == Status::kErrorNonFinite);
  CHECK(out[0] == evict::Tier::kEvict);
}

// ---- the cache ------------------------------------------------------------------------------

namespace {

cache::CacheShape small_shape() {
  cache::CacheShape s;
  s.layers = 2;
  s.q_heads = 6;
  s.kv_heads = 2;
  s.head_dim = 16;
  s.max_tokens = 400;
  s.max_sequences = 2;
  return s;
}

struct Chunk {
  std::vector<float> q, k, v, out;
};

Chunk random_chunk(const cache::CacheShape& s, std::int64_t n, std::uint32_t seed) {
  Chunk c;
  c.q = memattn_test::random_vector<float>(static_cast<std::size_t>(n * s.q_heads * s.head_dim), seed, 1.5f);
  c.k = memattn_test::random_vector<float>(static_cast<std::size_t>(n * s.kv_heads * s.head_dim), seed + 1, 1.5f);
  c.v = memattn_test::random_vector<float>(static_cast<std::size_t>(n * s.kv_heads * s.head_dim), seed + 2);
  // a few outlier key channels, as real keys have
  for (std::int64_t i = 0; i < n * s.kv_heads; ++i) c.k[static_cast<std::size_t>(i * s.head_dim + 3)] += 12.f;
  c.out.assign(c.q.size(), 0.f);
  return c;
}

using Cache = cpu::MixedKvCache<>;
using BlockCache = cpu::MixedKvCache<evict::AccumAttn, true>;  // lowk=1: per-channel key blocks

// One chunk through the cache, checked against fp64 attention over the dequantised mixed cache as
// it was before the chunk plus the chunk's fp16 rows (causal). Returns the worst scaled error.
template <class C>
double run_chunk_checked(C& c, const cache::CacheShape& s, int seq, const Chunk& ch, std::int64_t n) {
  const std::int64_t D = s.head_dim, G = s.q_heads / s.kv_heads, len = c.tokens(seq);
  double worst = 0;
  for (int layer = 0; layer < s.layers; ++layer) {
    std::vector<std::vector<typename C::TokenView>> before;
    for (int h = 0; h < s.kv_heads; ++h) before.push_back(c.tokens_of(seq, layer, h));
    std::vector<float> out(ch.out.size(), 0.f);
    auto q = make_view<3>(ch.q.data(), {n, s.q_heads, D});
    auto k = make_view<3>(ch.k.data(), {n, s.kv_heads, D});
    auto v = make_view<3>(ch.v.data(), {n, s.kv_heads, D});
    REQUIRE(c.attend(seq, layer, q, k, v, make_view<3>(out.data(), {n, s.q_heads, D})) == Status::kSuccess);
    for (int h = 0; h < s.kv_heads; ++h) {
      std::vector<std::vector<double>> K, V;
      for (const auto& t : before[static_cast<std::size_t>(h)]) {
        K.push_back(t.k);
        V.push_back(t.v);
      }
      for (std::int64_t t = 0; t < n; ++t) {
        std::vector<double> kr, vr;
        for (std::int64_t d = 0; d < D; ++d) {
          kr.push_back(half_to_float(float_to_half(ch.k[static_cast<std::size_t>((t * s.kv_heads + h) * D + d)])));
          vr.push_back(half_to_float(float_to_half(ch.v[static_cast<std::size_t>((t * s.kv_heads + h) * D + d)])));
        }
        K.push_back(kr);
        V.push_back(vr);
      }
      const std::int64_t old = static_cast<std::int64_t>(before[static_cast<std::size_t>(h)].size());
      for (std::int64_t t = 0; t < n; ++t)
        for (std::int64_t g = 0; g < G; ++g) {
          const std::int64_t hq = h * G + g;
          std::vector<double> qv(static_cast<std::size_t>(D));
          for (std::int64_t d = 0; d < D; ++d) qv[static_cast<std::size_t>(d)] = ch.q[static_cast<std::size_t>((t * s.q_heads + hq) * D + d)];
          std::vector<double> o(static_cast<std::size_t>(D));
          double lse = 0;
          memattn_test::naive_row(
              qv, 1.0 / std::sqrt(static_cast<double>(D)), 0, old + t + 1, D,
              [&](std::int64_t j, std::int64_t d) { return K[static_cast<std::size_t>(j)][static_cast<std::size_t>(d)]; },
              [&](std::int64_t j, std::int64_t d) { return V[static_cast<std::size_t>(j)][static_cast<std::size_t>(d)]; },
              o.data(), &lse);
          for (std::int64_t d = 0; d < D; ++d) {
            const double got = out[static_cast<std::size_t>((t * s.q_heads + hq) * D + d)];
            worst = memattn_test::worse(worst, std::fabs(got - o[static_cast<std::size_t>(d)]) / (2e-5 + 2e-5 * std::fabs(o[static_cast<std::size_t>(d)])));
          }
        }
    }
  }
  REQUIRE(c.end_chunk(seq, {}) == Status::kSuccess);
  (void)len;
  return worst;
}

// test_mikv_avx2 (MEMATTN_TEST_MIKV_LOCAL) builds its caches here, with this binary's flags: the
// shared factory is compiled portable, and linking it would mix two builds of the same inline code.
Status make_cache(const std::string& spec, const cache::CacheShape& s, std::unique_ptr<cache::KvCache>* c, std::string* e) {
#if defined(MEMATTN_TEST_MIKV_LOCAL)
  std::vector<cache::PolicySpec> parts;
  MEMATTN_RETURN_IF_ERROR(cache::parse_kv_spec(spec, &parts, e));
  if (parts.size() != 1 || parts[0].name != "mikv") return Status::kErrorInvalidArgument;
  cache::ResolvedParams params;
  MEMATTN_RETURN_IF_ERROR(cache::resolve_params(parts[0], cpu::mikv_policy_info(), &params, e));
  MEMATTN_RETURN_IF_ERROR(cache::validate_shape(s));
  return cpu::make_mikv_kv_cache(params, s, Executor{}, c, e);
#else
  return memattn_test::make_kv_cache(spec, s, Executor{}, c, e);
#endif
}

std::unique_ptr<cache::KvCache> make(const std::string& spec, const cache::CacheShape& s, std::string* err = nullptr) {
  std::unique_ptr<cache::KvCache> c;
  std::string e;
  const Status st = make_cache(spec, s, &c, &e);
  if (err) *err = e;
  if (st != Status::kSuccess) return nullptr;
  return c;
}

}  // namespace

// Decode == fp64 over the dequantised cache at every chunk, plus the tier invariants.
template <class C>
void check_decode_and_tiers(const std::vector<std::string>& specs, int head_dim = 16) {
  cache::CacheShape s = small_shape();
  s.head_dim = head_dim;
  for (const std::string& spec : specs) {
    INFO(spec);
    auto base = make(spec, s);
    REQUIRE(base != nullptr);
    REQUIRE(dynamic_cast<C*>(base.get()) != nullptr);
    auto& c = static_cast<C&>(*base);
    const evict::TierBudget b = c.tier_budget();
    const auto pr = quant::MiKV::protection(c.params());
    std::map<std::int32_t, int> last_tier[2][2];  // per (layer, head): pos -> 0 exact/high, 1 low
    double worst = 0;
    std::uint32_t seed = 100;
    std::vector<std::int64_t> chunks = {40, 1, 3, 1, 1, 17, 1, 1, 1, 5, 1, 33, 1, 1, 8, 1};
    for (std::int64_t n : chunks) {
      const Chunk ch = random_chunk(s, n, seed += 3);
      worst = memattn_test::worse(worst, run_chunk_checked(c, s, 0, ch, n));
      const std::int32_t t_cur = static_cast<std::int32_t>(c.tokens(0) - 1);
      for (int layer = 0; layer < s.layers; ++layer)
        for (int h = 0; h < s.kv_heads; ++h) {
          const auto toks = c.tokens_of(0, layer, h);
          std::int64_t nh = 0, nl = 0, prot = 0;
          std::map<std::int32_t, int> now;
          for (const auto& t : toks) {
            const bool p = evict::is_protected(t.pos, t_cur, pr);
            if (p) {
              REQUIRE(t.exact);  // sinks and the recent window stay exact
              ++prot;
            }
            nh += t.tier == evict::Tier::kHigh;
            nl += t.tier == evict::Tier::kLow;
            now[t.pos] = t.tier == evict::Tier::kLow ? 1 : 0;
            auto it = last_tier[layer][h].find(t.pos);
            if (it != last_tier[layer][h].end()) REQUIRE(now[t.pos] >= it->second);  // monotone
          }
          // evicted tokens never come back
          for (const auto& kv : now)
            if (kv.first < t_cur - n + 1) REQUIRE(last_tier[layer][h].count(kv.first) == 1);
          REQUIRE(nh <= std::max<std::int64_t>(b.high_tokens, prot));
          if (b.low_tokens >= 0) REQUIRE(nl <= b.low_tokens);
          if (b.low_tokens < 0) REQUIRE(static_cast<std::int64_t>(toks.size()) == c.tokens(0));  // nothing evicted
          if (c.tokens(0) >= b.high_tokens + (b.low_tokens < 0 ? 0 : b.low_tokens))
            REQUIRE(nh == std::max<std::int64_t>(b.high_tokens, prot));  // High budget used exactly
          last_tier[layer][h] = now;
        }
    }
    INFO("worst scaled error " << worst);
    CHECK(worst <= 1.0);
    CHECK(c.bytes() > 0);
    CHECK(c.peak_bytes() >= c.bytes());
  }
}

TEST_CASE("mikv decode == fp64 attention over the dequantised mixed cache; tier invariants", "[mikv]") {
  check_decode_and_tiers<Cache>({
      "mikv:budget=24,high=16,low=2",                  // nothing evicted
      "mikv:budget=24,high=16,low=3,lowbudget=40",     // Low budget: eviction from the Low tier
      "mikv:budget=24,high=8,low=4,lowbudget=30,recent=8",
      "mikv:budget=20,high=16,low=2,lowbudget=0,sink=2",  // degenerates to H2O + sinks
      "mikv:budget=24,high=8,low=2,track=1,balance=0",
      "mikv:budget=24,low=2,exact=1,gqa=1",
  });
}

TEST_CASE("mikv decode at head_dim 64 (groups of 32 channels: whole code words per 16 channels)", "[mikv]") {
  check_decode_and_tiers<Cache>({"mikv:budget=24,high=16,low=2", "mikv:budget=24,high=8,low=4,lowbudget=30,recent=8"}, 64);
  check_decode_and_tiers<BlockCache>({"mikv:budget=24,high=16,low=2,lowk=1", "mikv:budget=24,high=8,low=4,lowk=1"}, 64);
}

TEST_CASE("mikv lowk=1: per-channel key blocks, same decode and tier invariants", "[mikv]") {
  check_decode_and_tiers<BlockCache>({
      "mikv:budget=24,high=16,low=2,lowk=1",                  // nothing evicted: blocks fill
      "mikv:budget=24,high=16,low=3,lowbudget=40,lowk=1",     // Low eviction: live bits, whole dead blocks
      "mikv:budget=24,high=8,low=4,lowbudget=30,recent=8,lowk=1",  // INT8 -> Low requantised into blocks
      "mikv:budget=24,high=8,low=2,track=1,balance=0,lowk=1",
  });
}

TEST_CASE("mikv lowk=1 block pool: per-channel error <= s/2, staging exact, reclaim drops dead blocks", "[mikv]") {
  quant::MixedRowConfig cfg{16, 2, 2};
  quant::MixedBlockPool<float> pool(cfg);
  std::vector<std::vector<Half>> K, V;
  std::uint32_t flags = 0;
  for (int t = 0; t < 70; ++t) {  // two full blocks + 6 staged rows
    const auto k = memattn_test::random_vector<float>(16, 1000u + static_cast<std::uint32_t>(t), 2.f);
    const auto v = memattn_test::random_vector<float>(16, 2000u + static_cast<std::uint32_t>(t), 1.f);
    std::vector<Half> kh, vh;
    for (int c = 0; c < 16; ++c) {
      kh.push_back(float_to_half(k[static_cast<std::size_t>(c)] + (c == 5 ? 30.f : 0.f)));  // outlier channel
      vh.push_back(float_to_half(v[static_cast<std::size_t>(c)]));
    }
    CHECK(pool.insert(kh.data(), vh.data(), t, static_cast<float>(t), &flags) == t);
    K.push_back(kh);
    V.push_back(vh);
  }
  CHECK(flags == quant::kQuantOk);
  CHECK(pool.blocks() == 2);
  CHECK(pool.staged() == 6);
  std::vector<float> k(16), v(16);
  for (int s = 0; s < 70; ++s) {
    pool.dequant(s, k.data(), v.data());
    for (int c = 0; c < 16; ++c) {
      const double x = half_to_float(K[static_cast<std::size_t>(s)][static_cast<std::size_t>(c)]);
      if (s >= 64) {
        CHECK(k[static_cast<std::size_t>(c)] == x);  // staging rows are exact
      } else {
        const quant::GroupMeta m = pool.key_meta(s / 32, c);
        CHECK(std::fabs(k[static_cast<std::size_t>(c)] - x) <= 0.5 * half_to_float(m.scale) * (1 + 1e-6));
      }
    }
  }
  // per-channel scales: the +30 outlier channel costs nothing (its range is its own), where a
  // per-token group holding it would have a range of ~32 instead of ~4
  float widest = 0;
  for (int c = 0; c < 16; ++c)
    if (c != 5) widest = std::max(widest, half_to_float(pool.key_meta(0, c).scale));
  CHECK(half_to_float(pool.key_meta(0, 5).scale) <= 1.5f * widest);
  const std::size_t before = pool.bytes();
  for (int s = 0; s < 32; ++s) pool.kill(s);  // block 0 dies whole
  pool.kill(40);                              // one row of block 1
  pool.kill(65);                              // one staged row
  pool.reclaim();
  CHECK(pool.blocks() == 1);
  CHECK(pool.staged() == 5);
  CHECK(pool.live() == 70 - 32 - 1 - 1);
  CHECK(pool.slots() == 32 + 5);
  CHECK(pool.bytes() < before);
  CHECK(pool.pos(0) == 32);   // block 1 moved down, positions with it
  CHECK(!pool.is_live(8));    // old slot 40
  CHECK(pool.pos(32) == 64);  // staged rows keep their order, the dead one gone
  CHECK(pool.pos(33) == 66);
  pool.dequant(33, k.data(), v.data());
  for (int c = 0; c < 16; ++c) CHECK(v[static_cast<std::size_t>(c)] == half_to_float(V[66][static_cast<std::size_t>(c)]));
}

TEST_CASE("mikv sinks: the first tokens stay exact and High", "[mikv]") {
  const cache::CacheShape s = small_shape();
  auto base = make("mikv:budget=12,recent=4,sink=4,lowbudget=10", s);
  REQUIRE(base != nullptr);
  auto& c = static_cast<Cache&>(*base);
  std::uint32_t seed = 5;
  for (int i = 0; i < 60; ++i) run_chunk_checked(c, s, 1, random_chunk(s, 1, seed += 3), 1);
  for (int l = 0; l < s.layers; ++l)
    for (int h = 0; h < s.kv_heads; ++h) {
      int sinks = 0;
      for (const auto& t : c.tokens_of(1, l, h))
        if (t.pos < 4) {
          CHECK(t.exact);
          ++sinks;
        }
      CHECK(sinks == 4);
      CHECK(c.exact_rows(1, l, h) + c.high8_rows(1, l, h) == 12);
      CHECK(c.low_rows(1, l, h) == 10);
    }
}

TEST_CASE("mikv bytes: real, metadata included, and within a byte budget", "[mikv]") {
  cache::CacheShape s = small_shape();
  s.head_dim = 64;
  s.q_heads = 6;
  s.kv_heads = 2;
  // Equal-bytes setting: H2O with 32 tokens vs MiKV with 16 High + Low for the rest of the bytes.
  const double per_h2o = 32.0 * (2 * 2 * 64 + 8);
  const std::string spec = "mikv:budget=16,low=2,bytes=" + std::to_string(static_cast<long long>(per_h2o));
  auto base = make(spec, s);
  REQUIRE(base != nullptr);
  auto& c = static_cast<Cache&>(*base);
  const std::int64_t lowb = c.tier_budget().low_tokens;
  CHECK(lowb == static_cast<std::int64_t>((per_h2o - 16 * 264.0) / (48 + 8 + 0.125)));
  std::uint32_t seed = 9;
  Chunk pre = random_chunk(s, 64, seed);
  run_chunk_checked(c, s, 0, pre, 64);
  for (int i = 0; i < 150; ++i) run_chunk_checked(c, s, 0, random_chunk(s, 1, seed += 3), 1);
  // every segment: High exact rows (capacity granules) + Low pages of 32 slots + balancer
  std::size_t want = 0;
  for (int l = 0; l < s.layers; ++l)
    for (int h = 0; h < s.kv_heads; ++h) {
      CHECK(c.low_rows(0, l, h) == lowb);
      CHECK(c.exact_rows(0, l, h) == 16);
    }
  (void)want;
  // steady state: at most one granule of exact rows and one Low page over the budget, per segment
  const double slack = 2 * 16 * 264.0 + 32 * (48 + 8 + 0.125) + 64 * 4;
  CHECK(static_cast<double>(c.bytes()) <= 4 * (per_h2o + slack));
  CHECK(static_cast<double>(c.bytes()) >= 4 * (16 * 264.0 + lowb * 56.0));
}

TEST_CASE("mikv bad input: specs, shapes, non-finite keys leave the cache unchanged", "[mikv]") {
  const cache::CacheShape s = small_shape();
  std::string err;
  CHECK(make("mikv:high=12", s, &err) == nullptr);
  CHECK(err.find("high must be 16") != std::string::npos);
  CHECK(make("mikv:low=5", s, &err) == nullptr);
  CHECK(err.find("low") != std::string::npos);
  CHECK(make("mikv:low=3,budget=8,recent=6,sink=4", s, &err) == nullptr);
  CHECK(err.find("protected") != std::string::npos);
  CHECK(make("mikv:budget=500", s, &err) == nullptr);
  CHECK(err.find("capacity") != std::string::npos);
  CHECK(make("mikv:lowbudget=10,bytes=100000", s, &err) == nullptr);
  CHECK(err.find("either") != std::string::npos);
  CHECK(make("mikv:budget=64,bytes=1000", s, &err) == nullptr);
  CHECK(err.find("do not cover") != std::string::npos);
  CHECK(make("mikv:nope=1", s, &err) == nullptr);
  CHECK(err.find("no parameter") != std::string::npos);
  cache::CacheShape bad = s;
  bad.head_dim = 12;
  CHECK(make("mikv", bad, &err) == nullptr);
  CHECK(err.find("head_dim") != std::string::npos);

  auto base = make("mikv:budget=16,lowbudget=8", s);
  REQUIRE(base != nullptr);
  auto& c = static_cast<Cache&>(*base);
  Chunk ch = random_chunk(s, 30, 1);
  run_chunk_checked(c, s, 0, ch, 30);
  const std::size_t bytes = c.bytes();
  const auto before = c.tokens_of(0, 0, 0);
  Chunk badc = random_chunk(s, 2, 2);
  badc.k[5] = NAN;
  auto q = make_view<3>(static_cast<const float*>(badc.q.data()), {2, s.q_heads, s.head_dim});
  auto k = make_view<3>(static_cast<const float*>(badc.k.data()), {2, s.kv_heads, s.head_dim});
  auto v = make_view<3>(static_cast<const float*>(badc.v.data()), {2, s.kv_heads, s.head_dim});
  CHECK(c.attend(0, 0, q, k, v, make_view<3>(badc.out.data(), {2, s.q_heads, s.head_dim})) == Status::kErrorNonFinite);
  badc.k[5] = 0.f;
  badc.v[7] = 1e6f;
  CHECK(c.attend(0, 0, q, k, v, make_view<3>(badc.out.data(), {2, s.q_heads, s.head_dim})) == Status::kErrorNonFinite);
  CHECK(c.bytes() == bytes);
  CHECK(c.tokens_of(0, 0, 0).size() == before.size());
  CHECK(c.tokens(0) == 30);
  CHECK(c.attend(0, 9, q, k, v, make_view<3>(badc.out.data(), {2, s.q_heads, s.head_dim})) == Status::kErrorInvalidArgument);
}

TEST_CASE("mikv lowk=1: byte budget solved with the block format's bytes; canonical spec", "[mikv]") {
  cache::CacheShape s = small_shape();
  s.head_dim = 64;
  s.q_heads = 6;
  s.kv_heads = 2;
  const double per_h2o = 128.0 * (2 * 2 * 64 + 8);
  auto base = make("mikv:budget=64,low=2,lowk=1,bytes=" + std::to_string(static_cast<long long>(per_h2o)), s);
  REQUIRE(base != nullptr);
  auto& c = static_cast<BlockCache&>(*base);
  // per Low token: K codes 16 + K meta 8 (64 ch x 4 B / 32 tokens) + V codes 16 + V meta 8 + pos 4 + score 4 + live 1;
  // the staging area of one block (32 fp16 K and V rows) comes off the bytes first
  CHECK(c.tier_budget().low_tokens == static_cast<std::int64_t>((per_h2o - 64 * 264.0 - 32 * 256.0) / 57.0));
  CHECK(std::string(c.spec()).find("lowk=1") != std::string::npos);
  auto plain = make("mikv:budget=16,low=2", s);
  REQUIRE(plain != nullptr);
  CHECK(std::string(plain->spec()).find("lowk") == std::string::npos);  // unchanged canonical spec
  std::uint32_t seed = 4;
  run_chunk_checked(c, s, 0, random_chunk(s, 128, seed), 128);
  for (int i = 0; i < 150; ++i) run_chunk_checked(c, s, 0, random_chunk(s, 1, seed += 3), 1);
  // Low eviction is whole-block: at most the budget, less by under one block; the bytes stay
  // within the byte budget plus one staging area and one chunk
  const std::int64_t lowb = c.tier_budget().low_tokens;
  for (int l = 0; l < s.layers; ++l)
    for (int h = 0; h < s.kv_heads; ++h) {
      CHECK(c.low_rows(0, l, h) <= lowb);
      CHECK(c.low_rows(0, l, h) > lowb - 32);
      CHECK(c.low_pool(0, l, h).slots() == c.low_rows(0, l, h));  // no dead slots left behind
    }
  CHECK(static_cast<double>(c.bytes()) <= 4 * (per_h2o + 16 * 264.0 + 64 * 4));  // + a granule of exact rows
}

// The GPU test's inputs, checked where no GPU is needed: the lowk=1 Low pool exported in the CUDA
// decode's layout reads back (the kernel's bit-stream walk) to exactly the pool's dequantised
// values; the reference built from the CPU tier functions == the cache's own decode step (output
// and H2O score updates); with slots killed on a copy it == fp64 attention over the live tokens.
TEST_CASE("mikv lowk=1: device block export and the CPU tier reference of the GPU test", "[mikv]") {
  cache::CacheShape s = small_shape();
  s.layers = 1;
  s.head_dim = 64;
  s.max_sequences = 1;
  const std::int64_t D = s.head_dim, G = s.q_heads / s.kv_heads;
  for (const std::string spec : {"mikv:budget=40,high=16,low=2,lowk=1,track=1", "mikv:budget=40,high=8,low=3,lowk=1,track=1",
                                 "mikv:budget=32,high=8,low=4,recent=8,lowk=1,track=1,exact=1"}) {
    INFO(spec);
    auto base = make(spec, s);
    REQUIRE(base != nullptr);
    auto& c = static_cast<BlockCache&>(*base);
    std::uint32_t seed = 77;
    for (std::int64_t n : {100, 1, 1, 7, 1, 3, 1}) {
      Chunk ch = random_chunk(s, n, seed += 3);
      REQUIRE(c.attend(0, 0, make_view<3>(static_cast<const float*>(ch.q.data()), {n, s.q_heads, D}),
                       make_view<3>(static_cast<const float*>(ch.k.data()), {n, s.kv_heads, D}),
                       make_view<3>(static_cast<const float*>(ch.v.data()), {n, s.kv_heads, D}),
                       make_view<3>(ch.out.data(), {n, s.q_heads, D})) == Status::kSuccess);
      REQUIRE(c.end_chunk(0, {}) == Status::kSuccess);
    }
    std::vector<std::vector<float>> before(static_cast<std::size_t>(s.kv_heads));
    for (int h = 0; h < s.kv_heads; ++h) {
      const auto& lo = c.low_pool(0, 0, h);
      before[static_cast<std::size_t>(h)].assign(lo.state(), lo.state() + lo.slots());
    }
    Chunk ch = random_chunk(s, 1, seed += 3);  // the decode step
    REQUIRE(c.attend(0, 0, make_view<3>(static_cast<const float*>(ch.q.data()), {1, s.q_heads, D}),
                     make_view<3>(static_cast<const float*>(ch.k.data()), {1, s.kv_heads, D}),
                     make_view<3>(static_cast<const float*>(ch.v.data()), {1, s.kv_heads, D}),
                     make_view<3>(ch.out.data(), {1, s.q_heads, D})) == Status::kSuccess);
    for (int h = 0; h < s.kv_heads; ++h) {
      auto lo = c.low_pool(0, 0, h);  // a copy
      const auto& hi = c.high8_pool(0, 0, h);
      const quant::MixedRowConfig& cfg = lo.config();
      REQUIRE(lo.blocks() >= 1);
      REQUIRE(lo.staged() >= 1);  // 100 + 13 tokens, budget 40 or 32: a partial block waits
      const Half* ek = c.exact_keys(0, 0, h);
      const Half* ev = c.exact_values(0, 0, h);
      const std::int64_t ne = c.exact_rows(0, 0, h);
      const float* bal = c.balancer(0, 0, h);
      const float* q = ch.q.data() + h * G * D;
      // 1. export == the pool, slot by slot, bit for bit
      const memattn_test::MikvBlockExport e = memattn_test::export_block_pool(lo);
      REQUIRE(e.slots == lo.slots());
      REQUIRE(e.blocks == lo.blocks());
      std::vector<float> k0(static_cast<std::size_t>(D)), v0(k0.size()), k1(k0.size()), v1(k0.size());
      for (int u = 0; u < e.slots; ++u) {
        lo.dequant(u, k0.data(), v0.data());
        memattn_test::export_decode(e, cfg, u, k1.data(), v1.data());
        REQUIRE(k1 == k0);
        REQUIRE(v1 == v0);
        REQUIRE(((e.live[static_cast<std::size_t>(u) >> 5] >> (u & 31)) & 1u) == (lo.is_live(u) ? 1u : 0u));
      }
      // 2. the reference == the cache's decode step
      std::vector<float> o, p;
      REQUIRE(memattn_test::mikv_block_reference(lo, hi, ek, ev, ne, bal, q, G, &o, &p) == Status::kSuccess);
      for (std::int64_t i = 0; i < G * D; ++i) {
        const double want = ch.out[static_cast<std::size_t>(h * G * D + i)];
        REQUIRE(std::fabs(o[static_cast<std::size_t>(i)] - want) <= 1e-5 + 1e-5 * std::fabs(want));
      }
      const std::int64_t N = lo.slots() + hi.slots() + ne;
      REQUIRE(static_cast<std::int64_t>(p.size()) == G * N);
      for (std::int64_t u = 0; u < lo.slots(); ++u) {  // Low scores move by the GQA-mean p (track=1)
        double pbar = 0;
        for (std::int64_t g = 0; g < G; ++g) pbar += p[static_cast<std::size_t>(g * N + u)];
        pbar /= static_cast<double>(G);
        const double was = before[static_cast<std::size_t>(h)][static_cast<std::size_t>(u)];
        const double moved = c.low_pool(0, 0, h).state()[u] - was;  // fp32 state: one rounding of the sum
        REQUIRE(std::fabs(pbar - moved) <= 1e-6 * (1 + std::fabs(was)) + 1e-4 * pbar);
      }
      // 3. dead slots inside blocks and in staging (a copy): reference == fp64 over the live tokens
      std::int64_t live_i = 0;
      for (std::int64_t u = 0; u < lo.slots(); ++u)
        if (lo.is_live(u) && ++live_i % 4 == 0) lo.kill(u);
      if (lo.is_live(lo.blocks() * 32)) lo.kill(lo.blocks() * 32);
      REQUIRE(lo.live() < lo.slots());
      REQUIRE(memattn_test::mikv_block_reference(lo, hi, ek, ev, ne, bal, q, G, &o, &p) == Status::kSuccess);
      const memattn_test::MikvBlockExport ed = memattn_test::export_block_pool(lo);
      std::vector<std::vector<double>> K, V;
      for (int u = 0; u < ed.slots; ++u) {
        if (!((ed.live[static_cast<std::size_t>(u) >> 5] >> (u & 31)) & 1u)) {
          for (std::int64_t g = 0; g < G; ++g) REQUIRE(p[static_cast<std::size_t>(g * N + u)] == 0.f);
          continue;
        }
        memattn_test::export_decode(ed, cfg, u, k1.data(), v1.data());
        std::vector<double> kr, vr;
        for (std::int64_t d = 0; d < D; ++d) {
          kr.push_back(static_cast<double>(k1[static_cast<std::size_t>(d)]) / bal[d]);
          vr.push_back(v1[static_cast<std::size_t>(d)]);
        }
        K.push_back(kr);
        V.push_back(vr);
      }
      for (std::int64_t u = 0; u < hi.slots(); ++u) {
        if (!hi.is_live(u)) continue;
        const quant::MixedRowView r = hi.row(u);
        std::vector<double> kr, vr;
        for (int d = 0; d < D; ++d) {
          kr.push_back(static_cast<double>(r.k_balanced(d)) / bal[d]);
          vr.push_back(r.v(d));
        }
        K.push_back(kr);
        V.push_back(vr);
      }
      for (std::int64_t j = 0; j < ne; ++j) {
        std::vector<double> kr, vr;
        for (std::int64_t d = 0; d < D; ++d) {
          kr.push_back(half_to_float(ek[j * D + d]));
          vr.push_back(half_to_float(ev[j * D + d]));
        }
        K.push_back(kr);
        V.push_back(vr);
      }
      for (std::int64_t g = 0; g < G; ++g) {
        std::vector<double> qv(q + g * D, q + (g + 1) * D), ref(static_cast<std::size_t>(D));
        double lse = 0;
        memattn_test::naive_row(
            qv, 1.0 / std::sqrt(static_cast<double>(D)), 0, static_cast<std::int64_t>(K.size()), D,
            [&](std::int64_t j, std::int64_t d) { return K[static_cast<std::size_t>(j)][static_cast<std::size_t>(d)]; },
            [&](std::int64_t j, std::int64_t d) { return V[static_cast<std::size_t>(j)][static_cast<std::size_t>(d)]; },
            ref.data(), &lse);
        for (std::int64_t d = 0; d < D; ++d)
          REQUIRE(std::fabs(o[static_cast<std::size_t>(g * D + d)] - ref[static_cast<std::size_t>(d)]) <=
                  2e-5 + 2e-5 * std::fabs(ref[static_cast<std::size_t>(d)]));
      }
    }
  }
}
