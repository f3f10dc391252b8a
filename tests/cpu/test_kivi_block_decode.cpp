// The AVX2 KIVI block decode (cpu/kivi_block_decode.hpp), built with -mavx2 -mfma -mf16c (the other
// tests are portable, so they run the caches' tiled paths): block logits and value sums against
// fp64 sums over quant::BlockView's canonical values for every bit width, group, head_dim, value
// group and row count; poisoned groups stay NaN; the KIVI cache's decode and the composed caches'
// decode (pruned key widths that are not a multiple of 8, blocks partly filled by eviction,
// per-token value codes) on this path against fp64 oracles over their dequantised contents.
// main: avx2_main.cpp (skipped on CPUs without AVX2 / FMA / F16C).
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <memory>
#include <random>
#include <vector>

#include "common/composed_oracle.hpp"
#include "memattn/cpu/composed_kv_cache.hpp"
#include "memattn/cpu/kivi_block_decode.hpp"
#include "memattn/cpu/kivi_kv_cache.hpp"

using namespace memattn;

namespace {

struct Block {
  quant::KvQuantConfig cfg;
  quant::BlockLayout lay;
  std::vector<std::uint32_t> rec;
  quant::BlockView view() const { return quant::BlockView{reinterpret_cast<const std::uint8_t*>(rec.data()), cfg, lay}; }
};

// One record of G random tokens; every 16th key channel offset (per-channel ranges differ).
// poison: one key and one value entry NaN (their groups are written poisoned).
Block make_block(const quant::KvQuantConfig& cfg, std::mt19937& rng, bool poison) {
  Block b{cfg, quant::block_layout(cfg), {}};
  b.rec.assign(b.lay.bytes / 4 + 1, 0u);
  std::normal_distribution<float> nd(0.f, 1.f);
  const int G = cfg.group, D = cfg.head_dim;
  std::vector<Half> k(static_cast<std::size_t>(G * D)), v(k.size());
  for (int i = 0; i < G * D; ++i) {
    k[static_cast<std::size_t>(i)] = float_to_half((i % 16 == 3 ? 4.f : 0.f) + nd(rng));
    v[static_cast<std::size_t>(i)] = float_to_half(nd(rng));
  }
  if (poison) {
    k[static_cast<std::size_t>(5 * D + 1)] = float_to_half(NAN);
    v[static_cast<std::size_t>(2 * D + D - 1)] = float_to_half(NAN);
  }
  std::vector<const Half*> kr(static_cast<std::size_t>(G)), vr(kr.size());
  for (int t = 0; t < G; ++t) {
    kr[static_cast<std::size_t>(t)] = k.data() + t * D;
    vr[static_cast<std::size_t>(t)] = v.data() + t * D;
  }
  quant::quantize_block(cfg, kr.data(), vr.data(), reinterpret_cast<std::uint8_t*>(b.rec.data()));
  return b;
}

struct Worst {
  double err = 0;
  int nan_mismatch = 0;
  void add(double got, double want, double scale) {
    if (std::isnan(want) || std::isnan(got)) {
      nan_mismatch += std::isnan(want) != std::isnan(got);
      return;
    }
    err = std::max(err, std::abs(got - want) / scale);
  }
};

// Runs scores() and values() for one block and compares with fp64 sums; S and acc carry sentinels
// past the rows / columns the call may write.
void check_block(const Block& b, int rows, std::mt19937& rng, Worst* ws, Worst* wv, int* untouched_bad) {
  const int G = b.cfg.group, D = b.cfg.head_dim;
  const quant::BlockView bv = b.view();
  std::normal_distribution<float> nd(0.f, 1.f);
  std::uniform_real_distribution<float> ud(0.f, 1.f);
  const std::int64_t ldq = D + 3, lds = G + 5, ldacc = D + 7;
  std::vector<float> Q(static_cast<std::size_t>((rows + 1) * ldq)), S(static_cast<std::size_t>((rows + 1) * lds), -7.f);
  std::vector<float> P(static_cast<std::size_t>(rows * lds)), acc(static_cast<std::size_t>((rows + 1) * ldacc));
  for (auto& x : Q) x = nd(rng) * 0.1f;
  for (std::size_t i = 0; i < P.size(); ++i) P[i] = i % 7 == 0 ? 0.f : ud(rng);
  for (auto& x : acc) x = nd(rng);
  const std::vector<float> acc0 = acc;
  std::vector<float> scratch(static_cast<std::size_t>(cpu::kivi_block::scratch_floats(b.cfg)));
  cpu::kivi_block::scores(bv, Q.data(), rows, ldq, S.data(), lds, scratch.data());
  cpu::kivi_block::values(bv, P.data(), rows, lds, acc.data(), ldacc, scratch.data());
  for (int r = 0; r < rows; ++r) {
    for (int t = 0; t < G; ++t) {
      double want = 0, mag = 0;  // mag: the folded terms' magnitudes (q s code and q z summed apart)
      for (int c = 0; c < D; ++c) {
        const double qc = Q[static_cast<std::size_t>(r * ldq + c)];
        const quant::GroupMeta m = bv.k_meta(c);
        want += qc * bv.k(t, c);
        mag += std::abs(qc * half_to_float(m.scale) * bv.k_code(t, c)) + std::abs(qc * half_to_float(m.zero));
      }
      ws->add(S[static_cast<std::size_t>(r * lds + t)], want, std::max(mag, 1e-3));
    }
    for (int t = G; t < lds; ++t) *untouched_bad += S[static_cast<std::size_t>(r * lds + t)] != -7.f;
    for (int c = 0; c < D; ++c) {
      double want = acc0[static_cast<std::size_t>(r * ldacc + c)], mag = std::abs(want);
      for (int t = 0; t < G; ++t) {
        const double pt = P[static_cast<std::size_t>(r * lds + t)];
        const quant::GroupMeta m = bv.v_meta(t, c / b.cfg.vg());
        want += pt * bv.v(t, c);
        mag += std::abs(pt * half_to_float(m.scale) * bv.v_code(t, c)) + std::abs(pt * half_to_float(m.zero));
      }
      wv->add(acc[static_cast<std::size_t>(r * ldacc + c)], want, std::max(mag, 1e-3));
    }
    for (int c = D; c < ldacc; ++c)
      *untouched_bad += acc[static_cast<std::size_t>(r * ldacc + c)] != acc0[static_cast<std::size_t>(r * ldacc + c)];
  }
  for (std::int64_t i = rows * lds; i < (rows + 1) * lds; ++i) *untouched_bad += S[static_cast<std::size_t>(i)] != -7.f;
  for (std::int64_t i = rows * ldacc; i < (rows + 1) * ldacc; ++i)
    *untouched_bad += acc[static_cast<std::size_t>(i)] != acc0[static_cast<std::size_t>(i)];
}

}  // namespace

TEST_CASE("fused KIVI block decode: logits and value sums == fp64 over the canonical values", "[kivi][avx2]") {
  std::mt19937 rng(7u);
  int configs = 0;
  for (int D : {8, 64, 128, 256})
    for (int G : {32, 64, 128})
      for (int gv : {8, 16, 32, 0}) {
        quant::KvQuantConfig cfg;
        cfg.head_dim = D;
        cfg.group = G;
        cfg.v_group = gv;
        cfg.residual = G;
        for (int kb : {2, 4, 8})
          for (int vb : {2, 4, 8}) {
            cfg.bits_k = kb;
            cfg.bits_v = vb;
            if (cfg.validate() != Status::kSuccess) continue;
            REQUIRE(cpu::kivi_block::available(cfg));
            INFO("D " << D << " G " << G << " G_V " << cfg.vg() << " K" << kb << "V" << vb);
            const Block b = make_block(cfg, rng, false);
            Worst ws, wv;
            int bad = 0;
            for (int rows : {1, 2, 3, 4, 5, 8, 13, 16}) check_block(b, rows, rng, &ws, &wv, &bad);
            CHECK(ws.err < 2e-6);
            CHECK(wv.err < 2e-6);
            CHECK(ws.nan_mismatch + wv.nan_mismatch == 0);
            CHECK(bad == 0);
            ++configs;
          }
      }
  CHECK(configs > 200);
}

TEST_CASE("fused KIVI block decode: poisoned groups give NaN exactly where fp64 does", "[kivi][avx2]") {
  std::mt19937 rng(11u);
  quant::KvQuantConfig cfg;
  cfg.head_dim = 64;
  cfg.residual = 32;
  for (int kb : {2, 4, 8}) {
    cfg.bits_k = kb;
    cfg.bits_v = kb == 2 ? 8 : (kb == 4 ? 4 : 2);
    const Block b = make_block(cfg, rng, true);
    Worst ws, wv;
    int bad = 0;
    check_block(b, 4, rng, &ws, &wv, &bad);
    CHECK(ws.nan_mismatch + wv.nan_mismatch == 0);
    CHECK(ws.err < 2e-6);
    CHECK(wv.err < 2e-6);
    CHECK(bad == 0);
  }
}

// Decode through the cache on this path vs fp64 attention over the state it held before each
// step (dequantised blocks, fp16 ring) plus the step's own token in fp16.
TEST_CASE("KIVI cache decode on the fused path == fp64 oracle on the dequantised state", "[kivi][avx2]") {
  const int Hq = 8, Hkv = 2, g = Hq / Hkv;
  for (int D : {64, 128})
    for (int kb : {2, 4})
      for (int vb : {2, 8}) {
        INFO("D " << D << " K" << kb << "V" << vb);
        quant::KvQuantConfig cfg;
        cfg.head_dim = D;
        cfg.bits_k = kb;
        cfg.bits_v = vb;
        cfg.group = 32;
        cfg.residual = 32;
        cache::CacheShape shape;
        shape.layers = 1;
        shape.q_heads = Hq;
        shape.kv_heads = Hkv;
        shape.head_dim = D;
        shape.max_tokens = 400;
        shape.max_sequences = 1;
        std::unique_ptr<cpu::KiviKvCache> c;
        REQUIRE(cpu::KiviKvCache::create(shape, cfg, Executor{}, &c) == Status::kSuccess);
        std::mt19937 rng(static_cast<unsigned>(D + kb * 10 + vb));
        std::normal_distribution<float> nd(0.f, 1.f);
        auto tokens = [&](int n, std::vector<float>* q, std::vector<float>* k, std::vector<float>* v) {
          q->resize(static_cast<std::size_t>(n * Hq * D));
          k->resize(static_cast<std::size_t>(n * Hkv * D));
          v->resize(k->size());
          for (auto& x : *q) x = nd(rng);
          for (std::size_t i = 0; i < k->size(); ++i) {
            (*k)[i] = (i % 16 == 3 ? 4.f : 0.f) + nd(rng);
            (*v)[i] = nd(rng);
          }
        };
        std::vector<float> q, k, v, o;
        tokens(250, &q, &k, &v);
        o.resize(q.size());
        REQUIRE(c->attend(0, 0, make_view<3>(static_cast<const float*>(q.data()), {250, Hq, D}),
                          make_view<3>(static_cast<const float*>(k.data()), {250, Hkv, D}),
                          make_view<3>(static_cast<const float*>(v.data()), {250, Hkv, D}), make_view<3>(o.data(), {250, Hq, D})) ==
                Status::kSuccess);
        REQUIRE(c->end_chunk(0, {}) == Status::kSuccess);
        double worst = 0;
        for (int step = 0; step < 40; ++step) {
          tokens(1, &q, &k, &v);
          o.assign(q.size(), NAN);
          const std::int64_t len = c->tokens(0), nq = c->quantized_tokens(0, 0);
          // the state before the step, per KV head, as fp64 rows
          std::vector<std::vector<std::vector<double>>> K(static_cast<std::size_t>(Hkv)), V(K.size());
          for (int h = 0; h < Hkv; ++h) {
            for (std::int64_t t = 0; t <= len; ++t) {
              std::vector<double> kr(static_cast<std::size_t>(D)), vr(kr.size());
              for (int ch = 0; ch < D; ++ch) {
                if (t < nq) {
                  const quant::BlockView bv = c->block(0, 0, h, t / cfg.group);
                  kr[static_cast<std::size_t>(ch)] = bv.k(static_cast<int>(t % cfg.group), ch);
                  vr[static_cast<std::size_t>(ch)] = bv.v(static_cast<int>(t % cfg.group), ch);
                } else if (t < len) {
                  kr[static_cast<std::size_t>(ch)] = half_to_float(c->ring_k(0, 0, h, t)[ch]);
                  vr[static_cast<std::size_t>(ch)] = half_to_float(c->ring_v(0, 0, h, t)[ch]);
                } else {
                  kr[static_cast<std::size_t>(ch)] = half_to_float(float_to_half(k[static_cast<std::size_t>(h * D + ch)]));
                  vr[static_cast<std::size_t>(ch)] = half_to_float(float_to_half(v[static_cast<std::size_t>(h * D + ch)]));
                }
              }
              K[static_cast<std::size_t>(h)].push_back(kr);
              V[static_cast<std::size_t>(h)].push_back(vr);
            }
          }
          REQUIRE(c->attend(0, 0, make_view<3>(static_cast<const float*>(q.data()), {1, Hq, D}),
                            make_view<3>(static_cast<const float*>(k.data()), {1, Hkv, D}),
                            make_view<3>(static_cast<const float*>(v.data()), {1, Hkv, D}), make_view<3>(o.data(), {1, Hq, D})) ==
                  Status::kSuccess);
          REQUIRE(c->end_chunk(0, {}) == Status::kSuccess);
          for (int hq = 0; hq < Hq; ++hq) {
            const auto& Kh = K[static_cast<std::size_t>(hq / g)];
            const auto& Vh = V[static_cast<std::size_t>(hq / g)];
            std::vector<double> s(Kh.size());
            double mx = -INFINITY;
            for (std::size_t t = 0; t < Kh.size(); ++t) {
              double d = 0;
              for (int ch = 0; ch < D; ++ch) d += static_cast<double>(q[static_cast<std::size_t>(hq * D + ch)]) * Kh[t][static_cast<std::size_t>(ch)];
              s[t] = d / std::sqrt(static_cast<double>(D));
              mx = std::max(mx, s[t]);
            }
            double l = 0;
            for (double& x : s) l += (x = std::exp(x - mx));
            double vmax = 0;
            for (const auto& row : Vh)
              for (double x : row) vmax = std::max(vmax, std::abs(x));
            for (int ch = 0; ch < D; ++ch) {
              double want = 0;
              for (std::size_t t = 0; t < Kh.size(); ++t) want += s[t] / l * Vh[t][static_cast<std::size_t>(ch)];
              const double e = std::abs(o[static_cast<std::size_t>(hq * D + ch)] - want) / vmax;
              worst = std::isnan(e) ? INFINITY : std::max(worst, e);
            }
          }
        }
        CHECK(c->quantized_tokens(0, 0) >= 256);
        CHECK(worst < 2e-6);
      }
}

TEST_CASE("composed caches on the fused path == fp64 over their contents (pruned widths, partial blocks)", "[kivi][avx2]") {
  for (int kb : {2, 4, 8})
    for (int vb : {2, 8}) {
      INFO("K" << kb << "V" << vb);
      // think+kivi, D 64, lambda 0.4: d_keep 39 (codes straddle words)
      using ThinKKivi = cpu::ComposedKvCache<evict::NoEvict, prune::ThinK, quant::KiviQuant>;
      ThinKKivi::Config a;
      a.prune = memattn_test::composed::think_params();
      a.quant.residual = 0;
      memattn_test::composed::check_composed<ThinKKivi>(a, 64, kb, vb, "think+kivi", 5);
      // h2o+think+kivi, D 32 (d_keep 20): eviction leaves blocks partly filled (odd token counts)
      using H2OThinKKivi = cpu::ComposedKvCache<evict::H2O, prune::ThinK, quant::KiviQuant>;
      H2OThinKKivi::Config b;
      b.evict = evict::h2o_params(96, 24);
      b.prune = memattn_test::composed::think_params();
      b.quant.residual = 0;
      memattn_test::composed::check_composed<H2OThinKKivi>(b, 32, kb, vb, "h2o+think+kivi", 3);
      // kivi alone through the composed cache, D 128 (aligned widths)
      using Kivi = cpu::ComposedKvCache<evict::NoEvict, prune::NoPrune, quant::KiviQuant>;
      Kivi::Config k;
      k.quant.residual = 32;
      memattn_test::composed::check_composed<Kivi>(k, 128, kb, vb, "kivi", 9);
    }
}
