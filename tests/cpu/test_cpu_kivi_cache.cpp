// The CPU "kivi" KV cache: attention vs an fp64 oracle over the dequantised state (fp32
// rounding), vs exact attention (quantisation error), chunk-size invariance of the bytes and the
// outputs, the residual window, byte accounting, bad input.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/kv_factory.hpp"
#include "memattn/cpu/kivi_kv_cache.hpp"

using namespace memattn;

namespace {

struct Problem {
  int Hq, Hkv, D, T;
  std::vector<float> q, k, v;  // [T][H][D]
};

Problem make_problem(int Hq, int Hkv, int D, int T, unsigned seed) {
  Problem p{Hq, Hkv, D, T, {}, {}, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.f, 1.f);
  p.q.resize(static_cast<std::size_t>(T * Hq * D));
  p.k.resize(static_cast<std::size_t>(T * Hkv * D));
  p.v.resize(p.k.size());
  for (auto& x : p.q) x = nd(rng);
  for (int t = 0; t < T; ++t) {
    const float sig = std::exp(0.5f * nd(rng));
    for (int h = 0; h < Hkv; ++h)
      for (int c = 0; c < D; ++c) {
        const std::size_t i = static_cast<std::size_t>((t * Hkv + h) * D + c);
        p.k[i] = (c % 16 == 5 ? 6.f : 0.f) + nd(rng);  // outlier channels
        p.v[i] = sig * nd(rng);
      }
  }
  return p;
}

TensorView<const float, 3> view(const std::vector<float>& x, int t0, int n, int H, int D) {
  return make_view<3>(x.data() + static_cast<std::size_t>(t0) * H * D, {n, H, D});
}

float f16(float x) { return half_to_float(float_to_half(x)); }

// fp64 softmax attention of one query row over rows K, V (already the values the cache holds).
void attend64(const float* q, const std::vector<std::vector<double>>& K, const std::vector<std::vector<double>>& V, int D,
              std::vector<double>* out) {
  const double tau = 1.0 / std::sqrt(static_cast<double>(D));
  std::vector<double> s(K.size());
  double m = -INFINITY;
  for (std::size_t t = 0; t < K.size(); ++t) {
    double a = 0;
    for (int c = 0; c < D; ++c) a += static_cast<double>(q[c]) * K[t][static_cast<std::size_t>(c)];
    s[t] = a * tau;
    m = std::max(m, s[t]);
  }
  double l = 0;
  out->assign(static_cast<std::size_t>(D), 0.0);
  for (std::size_t t = 0; t < K.size(); ++t) {
    const double pw = std::exp(s[t] - m);
    l += pw;
    for (int c = 0; c < D; ++c) (*out)[static_cast<std::size_t>(c)] += pw * V[t][static_cast<std::size_t>(c)];
  }
  for (auto& x : *out) x /= l;
}

// The values the cache holds for (layer 0, KV head h) before a chunk: dequantised blocks, then ring.
void held_values(const cpu::KiviKvCache& c, int h, std::vector<std::vector<double>>* K, std::vector<std::vector<double>>* V) {
  const int D = c.shape().head_dim, G = c.config().group;
  const std::int64_t nq = c.quantized_tokens(0, 0), size = c.stored_tokens(0, 0);
  K->clear();
  V->clear();
  for (std::int64_t t = 0; t < nq; ++t) {
    const quant::BlockView bv = c.block(0, 0, h, t / G);
    std::vector<double> kr(static_cast<std::size_t>(D)), vr(static_cast<std::size_t>(D));
    for (int ch = 0; ch < D; ++ch) {
      const quant::GroupMeta mk = bv.k_meta(ch), mv = bv.v_meta(static_cast<int>(t % G), ch / c.config().vg());
      kr[static_cast<std::size_t>(ch)] = quant::half_to_double(mk.zero) + bv.k_code(static_cast<int>(t % G), ch) * quant::half_to_double(mk.scale);
      vr[static_cast<std::size_t>(ch)] = quant::half_to_double(mv.zero) + bv.v_code(static_cast<int>(t % G), ch) * quant::half_to_double(mv.scale);
    }
    K->push_back(kr);
    V->push_back(vr);
  }
  for (std::int64_t t = nq; t < size; ++t) {
    std::vector<double> kr(static_cast<std::size_t>(D)), vr(static_cast<std::size_t>(D));
    for (int ch = 0; ch < D; ++ch) {
      kr[static_cast<std::size_t>(ch)] = half_to_float(c.ring_k(0, 0, h, t)[ch]);
      vr[static_cast<std::size_t>(ch)] = half_to_float(c.ring_v(0, 0, h, t)[ch]);
    }
    K->push_back(kr);
    V->push_back(vr);
  }
}

std::unique_ptr<cpu::KiviKvCache> make_cache(const Problem& p, int kb, int vb, int G, int R, int max_tokens = 0) {
  cache::CacheShape s;
  s.layers = 1;
  s.q_heads = p.Hq;
  s.kv_heads = p.Hkv;
  s.head_dim = p.D;
  s.max_tokens = max_tokens > 0 ? max_tokens : p.T;
  quant::KvQuantConfig cfg;
  cfg.bits_k = kb;
  cfg.bits_v = vb;
  cfg.group = G;
  cfg.residual = R;
  std::unique_ptr<cpu::KiviKvCache> c;
  REQUIRE(cpu::KiviKvCache::create(s, cfg, Executor{}, &c) == Status::kSuccess);
  return c;
}

// Runs the problem through the cache in the given chunks. For every chunk it checks the output
// against the fp64 oracle over the held values + the chunk's fp16 tokens; returns the largest
// error relative to max|V|. Optionally also the error against exact fp64 attention on the
// unquantised inputs (relative L2 over all outputs).
struct RunResult {
  double oracle_err = 0;
  double exact_rel_l2 = 0;
  std::vector<float> out;  // [T][Hq][D]
};
RunResult run(cpu::KiviKvCache& c, const Problem& p, const std::vector<int>& chunks) {
  RunResult r;
  r.out.assign(p.q.size(), 0.f);
  const int D = p.D, g = p.Hq / p.Hkv;
  int t0 = 0;
  double num = 0, den = 0;
  for (int n : chunks) {
    std::vector<std::vector<std::vector<double>>> K(static_cast<std::size_t>(p.Hkv)), V(K.size());
    for (int h = 0; h < p.Hkv; ++h) held_values(c, h, &K[static_cast<std::size_t>(h)], &V[static_cast<std::size_t>(h)]);
    auto o = make_view<3>(r.out.data() + static_cast<std::size_t>(t0) * p.Hq * D, {n, p.Hq, D});
    REQUIRE(c.attend(0, 0, view(p.q, t0, n, p.Hq, D), view(p.k, t0, n, p.Hkv, D), view(p.v, t0, n, p.Hkv, D), o) ==
            Status::kSuccess);
    REQUIRE(c.end_chunk(0, {}) == Status::kSuccess);
    for (int i = 0; i < n; ++i) {
      const int t = t0 + i;
      for (int h = 0; h < p.Hkv; ++h) {
        auto& Kh = K[static_cast<std::size_t>(h)];
        auto& Vh = V[static_cast<std::size_t>(h)];
        std::vector<double> kr(static_cast<std::size_t>(D)), vr(kr.size());
        for (int ch = 0; ch < D; ++ch) {
          kr[static_cast<std::size_t>(ch)] = f16(p.k[static_cast<std::size_t>((t * p.Hkv + h) * D + ch)]);
          vr[static_cast<std::size_t>(ch)] = f16(p.v[static_cast<std::size_t>((t * p.Hkv + h) * D + ch)]);
        }
        Kh.push_back(kr);
        Vh.push_back(vr);
        double vmax = 0;
        for (auto& row : Vh)
          for (double x : row) vmax = std::max(vmax, std::abs(x));
        // Exact inputs for the quantisation-error measure.
        std::vector<std::vector<double>> Ke, Ve;
        for (int u = 0; u <= t; ++u) {
          std::vector<double> a(static_cast<std::size_t>(D)), b(a.size());
          for (int ch = 0; ch < D; ++ch) {
            a[static_cast<std::size_t>(ch)] = p.k[static_cast<std::size_t>((u * p.Hkv + h) * D + ch)];
            b[static_cast<std::size_t>(ch)] = p.v[static_cast<std::size_t>((u * p.Hkv + h) * D + ch)];
          }
          Ke.push_back(a);
          Ve.push_back(b);
        }
        for (int gi = 0; gi < g; ++gi) {
          const int hq = h * g + gi;
          const float* qrow = p.q.data() + static_cast<std::size_t>((t * p.Hq + hq) * D);
          std::vector<double> want, exact;
          attend64(qrow, Kh, Vh, D, &want);
          attend64(qrow, Ke, Ve, D, &exact);
          const float* got = r.out.data() + static_cast<std::size_t>((t * p.Hq + hq) * D);
          for (int ch = 0; ch < D; ++ch) {
            const double e = std::abs(got[ch] - want[static_cast<std::size_t>(ch)]) / vmax;
            if (!(e <= r.oracle_err)) r.oracle_err = std::isnan(e) ? INFINITY : e;
            num += (got[ch] - exact[static_cast<std::size_t>(ch)]) * (got[ch] - exact[static_cast<std::size_t>(ch)]);
            den += exact[static_cast<std::size_t>(ch)] * exact[static_cast<std::size_t>(ch)];
          }
        }
      }
    }
    t0 += n;
  }
  r.exact_rel_l2 = std::sqrt(num / den);
  return r;
}

std::vector<int> decode_after(int prefill, int T) {
  std::vector<int> ch;
  if (prefill > 0) ch.push_back(prefill);
  for (int t = prefill; t < T; ++t) ch.push_back(1);
  return ch;
}

std::vector<std::uint8_t> state_bytes(const cpu::KiviKvCache& c) {
  std::vector<std::uint8_t> out;
  const int Hkv = c.shape().kv_heads, D = c.shape().head_dim, G = c.config().group;
  const std::size_t rec = quant::block_layout(c.config()).bytes;
  for (std::int64_t j = 0; j < c.quantized_tokens(0, 0) / G; ++j)
    for (int h = 0; h < Hkv; ++h) {
      const std::uint8_t* b = c.block(0, 0, h, j).rec;
      out.insert(out.end(), b, b + rec);
    }
  for (std::int64_t t = c.quantized_tokens(0, 0); t < c.stored_tokens(0, 0); ++t)
    for (int h = 0; h < Hkv; ++h) {
      const auto* k = reinterpret_cast<const std::uint8_t*>(c.ring_k(0, 0, h, t));
      const auto* v = reinterpret_cast<const std::uint8_t*>(c.ring_v(0, 0, h, t));
      out.insert(out.end(), k, k + 2 * D);
      out.insert(out.end(), v, v + 2 * D);
    }
  return out;
}

}  // namespace

TEST_CASE("kivi cache: decode matches the fp64 oracle on the dequantised state, all bit pairs", "[kivi]") {
  for (int D : {8, 64}) {
    const Problem p = make_problem(D == 8 ? 8 : 6, D == 8 ? 4 : 2, D, 200, 11u + static_cast<unsigned>(D));
    for (int kb : {2, 4, 8})
      for (int vb : {2, 4, 8}) {
        INFO("D " << D << " K" << kb << "V" << vb);
        auto c = make_cache(p, kb, vb, 32, 32);
        const RunResult r = run(*c, p, decode_after(1, p.T));
        CHECK(r.oracle_err < 2e-6);
        CHECK(c->quantized_tokens(0, 0) == 160);  // G * floor((200 - 32) / 32)
      }
  }
}

TEST_CASE("kivi cache: prefill chunks match the oracle too (causal within the chunk)", "[kivi]") {
  const Problem p = make_problem(6, 2, 64, 300, 5);
  auto c = make_cache(p, 2, 2, 32, 64);
  const RunResult r = run(*c, p, {1, 100, 37, 64, 98});
  CHECK(r.oracle_err < 2e-6);
}

TEST_CASE("kivi cache: error vs exact attention shrinks with bits, R keeps recent tokens exact", "[kivi]") {
  const Problem p = make_problem(6, 2, 64, 400, 21);
  const std::vector<int> ch = decode_after(64, p.T);
  double e22 = 0, e44 = 0, e88 = 0;
  {
    auto c = make_cache(p, 2, 2, 32, 32);
    e22 = run(*c, p, ch).exact_rel_l2;
  }
  {
    auto c = make_cache(p, 4, 4, 32, 32);
    e44 = run(*c, p, ch).exact_rel_l2;
  }
  {
    auto c = make_cache(p, 8, 8, 32, 32);
    e88 = run(*c, p, ch).exact_rel_l2;
  }
  INFO("relL2 vs exact: K2V2 " << e22 << " K4V4 " << e44 << " K8V8 " << e88);
  CHECK(e88 < 5e-3);
  CHECK(e44 < 0.1);
  CHECK(e88 < e44);
  CHECK(e44 < e22);
  CHECK(e22 < 0.6);
  // Residual window covering everything: only fp16 rounding of K and V remains.
  auto c = make_cache(p, 2, 2, 32, 512);
  CHECK(run(*c, p, ch).exact_rel_l2 < 2e-3);
  CHECK(c->quantized_tokens(0, 0) == 0);
}

TEST_CASE("kivi cache: state and outputs do not depend on the chunking", "[kivi]") {
  const Problem p = make_problem(6, 2, 64, 230, 3);
  for (int R : {0, 32, 128}) {
    for (int G : {32, 64}) {
      if (R % G) continue;
      INFO("R " << R << " G " << G);
      auto a = make_cache(p, 4, 2, G, R);
      auto b = make_cache(p, 4, 2, G, R);
      auto c = make_cache(p, 4, 2, G, R);
      std::vector<int> cha = {200}, chb = {17, 64, 1, 31, 87};
      for (int i = 0; i < 30; ++i) {
        cha.push_back(1);
        chb.push_back(1);
      }
      RunResult ra = run(*a, p, cha);
      RunResult rb = run(*b, p, chb);
      RunResult rc = run(*c, p, decode_after(0, 230));
      CHECK(state_bytes(*a) == state_bytes(*b));
      CHECK(state_bytes(*a) == state_bytes(*c));
      CHECK(a->quantized_tokens(0, 0) == G * ((230 - R) / G));
      // The last 30 decode steps saw identical states: bit-identical outputs.
      const std::size_t from = static_cast<std::size_t>(200 * p.Hq * p.D);
      CHECK(std::memcmp(ra.out.data() + from, rb.out.data() + from, (ra.out.size() - from) * sizeof(float)) == 0);
      CHECK(std::memcmp(ra.out.data() + from, rc.out.data() + from, (ra.out.size() - from) * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("kivi cache: the residual window holds >= min(N, R) newest tokens bit-exactly", "[kivi]") {
  const Problem p = make_problem(4, 2, 32, 300, 8);
  const int R = 64, G = 32;
  auto c = make_cache(p, 2, 2, G, R);
  std::vector<float> out(static_cast<std::size_t>(p.Hq * p.D));
  for (int t = 0; t < p.T; ++t) {
    REQUIRE(c->attend(0, 0, view(p.q, t, 1, p.Hq, p.D), view(p.k, t, 1, p.Hkv, p.D), view(p.v, t, 1, p.Hkv, p.D),
                      make_view<3>(out.data(), {1, p.Hq, p.D})) == Status::kSuccess);
    REQUIRE(c->end_chunk(0, {}) == Status::kSuccess);
    const std::int64_t N = t + 1, nq = c->quantized_tokens(0, 0), nr = N - nq;
    REQUIRE(nq % G == 0);
    REQUIRE(nr >= std::min<std::int64_t>(N, R));
    REQUIRE(nr <= R + G - 1);
    for (std::int64_t u = nq; u < N; ++u)
      for (int h = 0; h < p.Hkv; ++h)
        for (int ch = 0; ch < p.D; ++ch) {
          REQUIRE(c->ring_k(0, 0, h, u)[ch].bits == float_to_half(p.k[static_cast<std::size_t>((u * p.Hkv + h) * p.D + ch)]).bits);
          REQUIRE(c->ring_v(0, 0, h, u)[ch].bits == float_to_half(p.v[static_cast<std::size_t>((u * p.Hkv + h) * p.D + ch)]).bits);
        }
  }
}

TEST_CASE("kivi cache: real bytes, metadata and ring included", "[kivi]") {
  const Problem p = make_problem(6, 2, 64, 1000, 4);
  auto c = make_cache(p, 2, 2, 32, 128, 1000);
  REQUIRE(c->reserve(0, 1000) == Status::kSuccess);
  std::vector<float> out(p.q.size());
  REQUIRE(c->attend(0, 0, view(p.q, 0, 1000, p.Hq, p.D), view(p.k, 0, 1000, p.Hkv, p.D), view(p.v, 0, 1000, p.Hkv, p.D),
                    make_view<3>(out.data(), {1000, p.Hq, p.D})) == Status::kSuccess);
  REQUIRE(c->end_chunk(0, {}) == Status::kSuccess);
  // 864 quantised tokens = 27 blocks x 2 heads x 1536 B (48 B/token at D = 64), ring 160 rows fp16 K+V.
  const std::size_t want = 27u * 2u * 1536u + 160u * 2u * 64u * 2u * 2u;
  CHECK(c->bytes() == want);
  CHECK(c->peak_bytes() >= want);
  REQUIRE(c->reset(0) == Status::kSuccess);
  CHECK(c->bytes() == 0);
}

TEST_CASE("kivi cache: bad input gives a Status and writes nothing", "[kivi]") {
  Problem p = make_problem(4, 2, 64, 100, 9);
  auto c = make_cache(p, 2, 2, 32, 32, 100);
  std::vector<float> out(p.q.size(), 0.f);
  auto step = [&](int t0, int n) {
    return c->attend(0, 0, view(p.q, t0, n, p.Hq, p.D), view(p.k, t0, n, p.Hkv, p.D), view(p.v, t0, n, p.Hkv, p.D),
                     make_view<3>(out.data() + static_cast<std::size_t>(t0) * p.Hq * p.D, {n, p.Hq, p.D}));
  };
  REQUIRE(step(0, 70) == Status::kSuccess);
  REQUIRE(c->end_chunk(0, {}) == Status::kSuccess);
  const auto before = state_bytes(*c);
  const std::size_t bytes_before = c->bytes();
  const std::vector<float> out_before = out;
  for (float bad : {NAN, INFINITY, -INFINITY, 7e4f}) {
    for (int which = 0; which < 2; ++which) {
      Problem b = p;
      (which ? b.v : b.k)[static_cast<std::size_t>((75 * p.Hkv + 1) * p.D + 3)] = bad;
      std::swap(b, p);
      CHECK(step(70, 10) == Status::kErrorNonFinite);
      std::swap(b, p);
      CHECK(state_bytes(*c) == before);
      CHECK(c->stored_tokens(0, 0) == 70);
      CHECK(c->bytes() == bytes_before);
      CHECK(out == out_before);
    }
  }
  CHECK(step(70, 31) == Status::kErrorCapacityExceeded);
  CHECK(state_bytes(*c) == before);
  CHECK(step(70, 30) == Status::kSuccess);  // still usable
  REQUIRE(c->end_chunk(0, {}) == Status::kSuccess);
  CHECK(c->tokens(0) == 100);

  // Configurations.
  cache::CacheShape s;
  s.layers = 2;
  s.q_heads = 4;
  s.kv_heads = 2;
  s.head_dim = 64;
  s.max_tokens = 256;
  std::unique_ptr<cache::KvCache> kc;
  std::string err;
  CHECK(memattn_test::make_kv_cache("kivi", s, Executor{}, &kc, &err) == Status::kSuccess);
  CHECK(std::string(kc->spec()) == "kivi:kbits=2,vbits=2,group=32,residual=128");
  CHECK(memattn_test::make_kv_cache("kivi:kbits=4,vbits=2,residual=32", s, Executor{}, &kc, &err) == Status::kSuccess);
  CHECK(memattn_test::make_kv_cache("kivi:kbits=3", s, Executor{}, &kc, &err) == Status::kErrorInvalidArgument);
  CHECK(memattn_test::make_kv_cache("kivi:vbits=5", s, Executor{}, &kc, &err) == Status::kErrorInvalidArgument);
  CHECK(memattn_test::make_kv_cache("kivi:group=48", s, Executor{}, &kc, &err) == Status::kErrorInvalidArgument);
  CHECK(memattn_test::make_kv_cache("kivi:residual=48", s, Executor{}, &kc, &err) == Status::kErrorInvalidArgument);
  s.head_dim = 12;
  CHECK(memattn_test::make_kv_cache("kivi", s, Executor{}, &kc, &err) == Status::kErrorUnsupportedHeadDim);
  s.head_dim = 8;  // stories260K: G_V = 8
  CHECK(memattn_test::make_kv_cache("kivi:kbits=2,vbits=2", s, Executor{}, &kc, &err) == Status::kSuccess);
}
