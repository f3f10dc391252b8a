// KIVI quantizer math (memattn/quant): packing, directed rounding, error bound, constant and
// non-finite groups, block records for every bit width, against an independent fp64 reference.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "memattn/cpu/code_unpack.hpp"
#include "memattn/quant/kivi.hpp"

using namespace memattn;
using namespace memattn::quant;

namespace {

Half h(double v) { return float_to_half(static_cast<float>(v)); }
double d(Half x) { return half_to_double(x); }

// Reference of §3.2 in plain fp64 with exact property checks instead of shared helpers.
struct RefMeta {
  double s, z;
  bool poison;
};
RefMeta ref_params(const std::vector<Half>& x, int L) {
  double mn = INFINITY, mx = -INFINITY;
  for (Half v : x) {
    if (!std::isfinite(d(v))) return {NAN, NAN, true};
    mn = std::min(mn, d(v));
    mx = std::max(mx, d(v));
  }
  // Largest fp16 <= mn by scanning the neighbourhood of the nearest fp16.
  auto largest_le = [](double v) {
    Half c = h(v);
    while (d(c) > v) c = half_next_down(c);
    while (d(half_next_up(c)) <= v && std::isfinite(d(half_next_up(c)))) c = half_next_up(c);
    return d(c) == 0 ? 0.0 : d(c);
  };
  auto smallest_ge = [](double v) {
    Half c = h(v);
    while (d(c) < v) c = half_next_up(c);
    while (d(half_next_down(c)) >= v) c = half_next_down(c);
    return d(c);
  };
  const double z = largest_le(mn);
  double s = smallest_ge((mx - z) / L);
  if (s == 0) s = std::ldexp(1.0, -24);
  return {s, z, false};
}
std::uint32_t ref_code(Half x, const RefMeta& m, int L) {
  if (m.poison) return 0;
  const double u = (d(x) - m.z) / m.s;
  double k = std::nearbyint(u);  // default rounding mode: ties to even
  return static_cast<std::uint32_t>(std::min<double>(L, std::max(0.0, k)));
}

std::vector<Half> random_group(std::mt19937_64& rng, int n) {
  std::uniform_real_distribution<double> u(0, 1);
  const double scale = std::pow(10.0, -6 + 10 * u(rng));  // 1e-6 .. 1e4
  const double offset = (u(rng) < 0.5 ? 0.0 : (u(rng) - 0.5) * 200 * scale);
  std::normal_distribution<double> nd(0, 1);
  std::vector<Half> x(static_cast<std::size_t>(n));
  for (auto& v : x) v = h(std::max(-65504.0, std::min(65504.0, offset + scale * nd(rng))));
  return x;
}

}  // namespace

TEST_CASE("packing: golden words, LSB-first", "[quant]") {
  std::uint32_t w[2] = {0, 0};
  for (int i = 0; i < 16; ++i) pack_code(w, i, 2, static_cast<std::uint32_t>(i % 4));
  CHECK(w[0] == 0xE4E4E4E4u);
  w[0] = 0;
  for (int i = 0; i < 8; ++i) pack_code(w, i, 4, static_cast<std::uint32_t>(i));
  CHECK(w[0] == 0x76543210u);
  w[0] = 0;
  for (int i = 0; i < 4; ++i) pack_code(w, i, 8, static_cast<std::uint32_t>(i + 1));
  CHECK(w[0] == 0x04030201u);
  w[0] = 0;
  pack_code(w, 15, 2, 3);
  CHECK(w[0] == 0xC0000000u);
  // Round trip with random codes, overwriting in place.
  std::mt19937 rng(7);
  for (int bits : {2, 4, 8}) {
    std::vector<std::uint32_t> words(64, 0xFFFFFFFFu), codes(64 * 32 / bits);
    for (std::size_t e = 0; e < codes.size(); ++e) {
      codes[e] = rng() & ((1u << bits) - 1u);
      pack_code(words.data(), static_cast<std::int64_t>(e), bits, codes[e]);
    }
    for (std::size_t e = 0; e < codes.size(); ++e) REQUIRE(unpack_code(words.data(), static_cast<std::int64_t>(e), bits) == codes[e]);
  }
}

// The CPU decodes' bulk unpacking (byte tables for 2/4/8 bits, per code for 3) == unpack_code for
// every width, with counts that end inside a byte and inside a word.
TEST_CASE("bulk code unpacking matches unpack_code", "[quant]") {
  std::mt19937 rng(11);
  std::vector<std::uint32_t> words(40);
  for (auto& w : words) w = static_cast<std::uint32_t>(rng());
  for (int bits : {2, 3, 4, 8}) {
    const int per = 32 / bits;
    for (std::int64_t count : {std::int64_t{0}, std::int64_t{1}, std::int64_t{3}, std::int64_t{per - 1}, std::int64_t{per + 1},
                               std::int64_t{7 * per + 5}, std::int64_t{40 * per}}) {
      std::vector<float> out(static_cast<std::size_t>(count) + 1, -1.f);
      cpu::unpack_codes(words.data(), count, bits, out.data());
      for (std::int64_t e = 0; e < count; ++e)
        REQUIRE(out[static_cast<std::size_t>(e)] == static_cast<float>(unpack_code(words.data(), e, bits)));
      REQUIRE(out[static_cast<std::size_t>(count)] == -1.f);  // nothing past count
    }
  }
}

TEST_CASE("block layout and bytes per token", "[quant]") {
  struct Row { int kb, vb, D; std::size_t bytes; double per_token; };
  for (const Row& r : {Row{2, 2, 128, 3072, 96}, Row{4, 2, 128, 4096, 128}, Row{4, 4, 128, 5120, 160},
                       Row{8, 8, 128, 9216, 288}, Row{2, 2, 64, 1536, 48}, Row{4, 2, 64, 2048, 64},
                       Row{4, 4, 64, 2560, 80}, Row{8, 8, 64, 4608, 144}, Row{2, 2, 8, 288, 9}}) {
    KvQuantConfig c;
    c.head_dim = r.D;
    c.bits_k = r.kb;
    c.bits_v = r.vb;
    REQUIRE(c.validate() == Status::kSuccess);
    const BlockLayout l = block_layout(c);
    CHECK(l.bytes == r.bytes);
    CHECK(bytes_per_token(c) == r.per_token);
    CHECK(l.km % 16 == 0);
    CHECK(l.vc % 16 == 0);
    CHECK(l.vm % 16 == 0);
  }
}

TEST_CASE("config validation", "[quant]") {
  KvQuantConfig c;
  c.head_dim = 64;
  CHECK(c.validate() == Status::kSuccess);
  c.bits_k = 3;
  CHECK(c.validate() == Status::kErrorInvalidArgument);
  c.bits_k = 2;
  c.bits_v = 1;
  CHECK(c.validate() == Status::kErrorInvalidArgument);
  c.bits_v = 2;
  c.group = 16;
  CHECK(c.validate() == Status::kErrorInvalidArgument);
  c.group = 32;
  c.residual = 48;
  CHECK(c.validate() == Status::kErrorInvalidArgument);
  c.residual = 0;
  CHECK(c.validate() == Status::kSuccess);
  c.head_dim = 12;
  CHECK(c.validate() == Status::kErrorUnsupportedHeadDim);
  c.head_dim = 264;
  CHECK(c.validate() == Status::kErrorUnsupportedHeadDim);
  c.head_dim = 80;  // min(32, 80) = 32 does not divide 80: the caller must set v_group
  CHECK(c.validate() == Status::kErrorInvalidArgument);
  c.v_group = 16;
  CHECK(c.validate() == Status::kSuccess);
  c.head_dim = 8;  // D < G: G_V = 8
  c.v_group = 0;
  CHECK(c.vg() == 8);
  CHECK(c.validate() == Status::kSuccess);
}

TEST_CASE("quantizer: ties golden and rint_half_even", "[quant]") {
  std::vector<Half> x;
  for (int i = 0; i <= 6; ++i) x.push_back(h(i));
  GroupMeta m;
  REQUIRE(group_params(x.data(), 7, 1, 3, &m) == kQuantOk);
  CHECK(d(m.zero) == 0.0);
  CHECK(d(m.scale) == 2.0);
  const std::uint32_t want[7] = {0, 0, 1, 2, 2, 2, 3};
  for (int i = 0; i < 7; ++i) CHECK(encode(x[static_cast<std::size_t>(i)], m, 3) == want[i]);
  CHECK(rint_half_even(2.5) == 2.0);
  CHECK(rint_half_even(3.5) == 4.0);
  CHECK(rint_half_even(-0.5) == 0.0);
  CHECK(rint_half_even(0.49999999999) == 0.0);
}

TEST_CASE("quantizer: directed rounding and |x - x^| <= s/2 on random groups", "[quant]") {
  std::mt19937_64 rng(1234);
  for (int bits : {2, 4, 8}) {
    const int L = (1 << bits) - 1;
    std::int64_t failures = 0;
    for (int trial = 0; trial < 20000; ++trial) {
      const int n = (trial % 3 == 0) ? 8 : 32;
      const std::vector<Half> x = random_group(rng, n);
      GroupMeta m;
      REQUIRE(group_params(x.data(), n, 1, L, &m) == kQuantOk);
      const RefMeta r = ref_params(x, L);
      REQUIRE(d(m.zero) == r.z);
      REQUIRE(d(m.scale) == r.s);
      REQUIRE(m.zero.bits != 0x8000u);
      for (Half v : x) {
        const std::uint32_t code = encode(v, m, L);
        REQUIRE(code == ref_code(v, r, L));
        const double xhat = r.z + code * r.s;  // exact in fp64
        if (!(std::abs(d(v) - xhat) <= r.s * (0.5 + std::ldexp(1.0, -40)))) ++failures;
        // Canonical fp32 value equals the fp64 one (exact product, one rounding of the sum).
        REQUIRE(decode(code, m) == static_cast<float>(xhat));
      }
    }
    CHECK(failures == 0);
  }
}

TEST_CASE("quantizer: constant, subnormal-range and extreme groups", "[quant]") {
  for (int bits : {2, 4, 8}) {
    const int L = (1 << bits) - 1;
    for (double c : {0.0, 1.0, 0.1, -65504.0, 65504.0, -0.0}) {
      std::vector<Half> x(32, h(c));
      GroupMeta m;
      REQUIRE(group_params(x.data(), 32, 1, L, &m) == kQuantOk);
      CHECK(m.scale.bits == kHalfMinSubnormal);
      for (Half v : x) {
        const float y = decode(encode(v, m, L), m);
        CHECK(std::isfinite(y));
        CHECK(y == static_cast<float>(d(v)));  // fp16-representable constants decode exactly
      }
    }
    // Range about 1e-6: subnormal scale, bound still holds.
    std::vector<Half> x;
    for (int i = 0; i < 32; ++i) x.push_back(h(1e-6 * (i % 7)));
    GroupMeta m;
    REQUIRE(group_params(x.data(), 32, 1, L, &m) == kQuantOk);
    CHECK((m.scale.bits & 0x7C00u) == 0);  // subnormal
    for (Half v : x) CHECK(std::abs(d(v) - (d(m.zero) + encode(v, m, L) * d(m.scale))) <= d(m.scale) / 2);
    // Mixed +-0 and the fp16 extremes.
    std::vector<Half> e = {Half{0x8000u}, Half{0x0000u}, h(65504), h(-65504)};
    REQUIRE(group_params(e.data(), 4, 1, L, &m) == kQuantOk);
    for (Half v : e) CHECK(std::abs(d(v) - (d(m.zero) + encode(v, m, L) * d(m.scale))) <= d(m.scale) / 2);
  }
}

TEST_CASE("quantizer: NaN and Inf poison the group", "[quant]") {
  for (std::uint16_t bad : {std::uint16_t{0x7E00u}, std::uint16_t{0x7C00u}, std::uint16_t{0xFC00u}, std::uint16_t{0x7C01u}}) {
    std::vector<Half> x(32, h(1.5));
    x[5] = Half{bad};
    GroupMeta m;
    CHECK(group_params(x.data(), 32, 1, 3, &m) == kQuantNonFinite);
    CHECK(m.scale.bits == kPoisonMeta);
    CHECK(m.zero.bits == kPoisonMeta);
    CHECK(encode(x[0], m, 3) == 0);
    CHECK(std::isnan(decode(0, m)));
  }
}

TEST_CASE("block records: K per channel, V per token, every bit pair, vs fp64 reference", "[quant]") {
  std::mt19937_64 rng(99);
  std::normal_distribution<double> nd(0, 1);
  for (int D : {8, 64, 128}) {
    for (int G : {32, 64}) {
      for (int kb : {2, 4, 8}) {
        for (int vb : {2, 4, 8}) {
          KvQuantConfig c;
          c.head_dim = D;
          c.bits_k = kb;
          c.bits_v = vb;
          c.group = G;
          c.residual = 0;
          REQUIRE(c.validate() == Status::kSuccess);
          // Outlier channels on K, per-token magnitudes on V.
          std::vector<Half> k(static_cast<std::size_t>(G * D)), v(k.size());
          for (int t = 0; t < G; ++t) {
            const double sig = std::exp(0.5 * nd(rng));
            for (int ch = 0; ch < D; ++ch) {
              k[static_cast<std::size_t>(t * D + ch)] = h((ch % 16 == 3 ? 15.0 : 0.0) + nd(rng));
              v[static_cast<std::size_t>(t * D + ch)] = h(sig * nd(rng));
            }
          }
          std::vector<const Half*> kr, vr;
          for (int t = 0; t < G; ++t) {
            kr.push_back(k.data() + t * D);
            vr.push_back(v.data() + t * D);
          }
          const BlockLayout lay = block_layout(c);
          std::vector<std::uint32_t> rec(lay.bytes / 4, 0xDEADBEEFu);
          REQUIRE(quantize_block(c, kr.data(), vr.data(), reinterpret_cast<std::uint8_t*>(rec.data())) == kQuantOk);
          const BlockView bv{reinterpret_cast<const std::uint8_t*>(rec.data()), c, lay};
          const int Lk = (1 << kb) - 1, Lv = (1 << vb) - 1, GV = c.vg();
          for (int ch = 0; ch < D; ++ch) {  // K: one group per channel over the G tokens
            std::vector<Half> col;
            for (int t = 0; t < G; ++t) col.push_back(k[static_cast<std::size_t>(t * D + ch)]);
            const RefMeta r = ref_params(col, Lk);
            REQUIRE(d(bv.k_meta(ch).scale) == r.s);
            REQUIRE(d(bv.k_meta(ch).zero) == r.z);
            for (int t = 0; t < G; ++t) {
              REQUIRE(bv.k_code(t, ch) == ref_code(col[static_cast<std::size_t>(t)], r, Lk));
              REQUIRE(std::abs(d(col[static_cast<std::size_t>(t)]) - bv.k(t, ch)) <= r.s / 2 * (1 + 1e-6));
            }
          }
          for (int t = 0; t < G; ++t) {  // V: one group per token and G_V channels
            for (int j = 0; j < D / GV; ++j) {
              std::vector<Half> grp(v.begin() + t * D + j * GV, v.begin() + t * D + (j + 1) * GV);
              const RefMeta r = ref_params(grp, Lv);
              REQUIRE(d(bv.v_meta(t, j).scale) == r.s);
              REQUIRE(d(bv.v_meta(t, j).zero) == r.z);
              for (int ch = 0; ch < GV; ++ch) {
                REQUIRE(bv.v_code(t, j * GV + ch) == ref_code(grp[static_cast<std::size_t>(ch)], r, Lv));
                REQUIRE(std::abs(d(grp[static_cast<std::size_t>(ch)]) - bv.v(t, j * GV + ch)) <= r.s / 2 * (1 + 1e-6));
              }
            }
          }
        }
      }
    }
  }
}

TEST_CASE("Kivi<> presets", "[quant]") {
  CHECK(Kivi<2, 2>::config(128).validate() == Status::kSuccess);
  CHECK(bytes_per_token(kivi2(128)) == 96);
  CHECK(bytes_per_token(k4v2(128)) == 128);
  CHECK(bytes_per_token(kivi4(128)) == 160);
  CHECK(bytes_per_token(k8v8(128)) == 288);
  CHECK(Kivi<4, 2, 64>::kGroup == 64);
}
