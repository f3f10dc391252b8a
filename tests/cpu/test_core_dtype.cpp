// fp16 / bf16 conversions against an independent reference: the nearest value in the table of
// all 65536 encodings, ties to the even encoding; plus NaN/Inf/signed-zero behaviour.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "memattn/core/dtype.hpp"
#include "memattn/cpu/convert.hpp"

#if defined(__F16C__)
#include <cpuid.h>
// CPUID leaf 1, ECX: AVX (bit 28), F16C (bit 29), and OSXSAVE (bit 27: the OS saves the YMM
// state). __builtin_cpu_supports("f16c") is GCC-only.
static bool cpu_has_f16c_avx() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid(1, &a, &b, &c, &d) == 0) return false;
  const unsigned need = (1u << 27) | (1u << 28) | (1u << 29);
  return (c & need) == need;
}
#endif

using namespace memattn;

namespace {

double decode_half_exact(std::uint16_t h) {
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const double sgn = (h & 0x8000) ? -1.0 : 1.0;
  if (e == 0) return sgn * std::ldexp(m, -24);
  if (e == 31) return m ? std::numeric_limits<double>::quiet_NaN() : sgn * INFINITY;
  return sgn * std::ldexp(1024 + m, e - 25);
}

double decode_bf16_exact(std::uint16_t b) {
  const std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Reference rounding: nearest non-negative encoding by binary search in sorted magnitudes; on a
// tie, the even encoding; beyond max + half an ulp, Inf.
struct RoundingTable {
  std::vector<std::pair<double, std::uint16_t>> mags;  // finite non-negative values, ascending
  double overflow_at;                                   // |x| >= this rounds to Inf
  std::uint16_t inf_bits;
  template <class Decode>
  RoundingTable(Decode dec, std::uint16_t max_finite, std::uint16_t inf) : inf_bits(inf) {
    for (std::uint32_t b = 0; b <= max_finite; ++b) mags.emplace_back(dec(static_cast<std::uint16_t>(b)), b);
    const double maxv = dec(max_finite), prev = dec(static_cast<std::uint16_t>(max_finite - 1));
    overflow_at = maxv + (maxv - prev) / 2;  // the tie rounds to even = Inf
  }
  std::uint16_t round(float x) const {
    const double a = std::abs(static_cast<double>(x));
    const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
    if (a >= overflow_at) return sign | inf_bits;
    auto it = std::lower_bound(mags.begin(), mags.end(), std::make_pair(a, std::uint16_t(0)));
    if (it == mags.end()) return sign | mags.back().second;  // above max but below the Inf tie
    if (it->first == a || it == mags.begin()) return sign | it->second;
    auto lo = it - 1;
    const double dl = a - lo->first, dh = it->first - a;
    if (dl < dh) return sign | lo->second;
    if (dh < dl) return sign | it->second;
    return sign | ((lo->second & 1) == 0 ? lo->second : it->second);
  }
};

std::vector<float> probe_floats(const RoundingTable& t) {
  std::vector<float> v;
  std::mt19937 rng(1234);
  std::uniform_int_distribution<std::uint32_t> bits;
  for (int i = 0; i < 300000; ++i) {
    std::uint32_t u = bits(rng);
    float f;
    std::memcpy(&f, &u, 4);
    if (std::isfinite(f)) v.push_back(f);
  }
  // Every midpoint between neighbours, and one float ulp either side of it: the tie cases.
  for (std::size_t i = 0; i + 1 < t.mags.size(); ++i) {
    const float mid = static_cast<float>((t.mags[i].first + t.mags[i + 1].first) / 2);
    v.push_back(mid);
    v.push_back(std::nextafter(mid, 0.f));
    v.push_back(std::nextafter(mid, INFINITY));
    v.push_back(-mid);
  }
  v.push_back(65504.f);
  v.push_back(65519.99f);
  v.push_back(65520.f);
  v.push_back(1e-8f);
  v.push_back(std::numeric_limits<float>::denorm_min());
  v.push_back(std::numeric_limits<float>::max());
  return v;
}

}  // namespace

TEST_CASE("fp16 decode is exact for all 65536 encodings", "[dtype]") {
  for (std::uint32_t b = 0; b < 65536; ++b) {
    const double want = decode_half_exact(static_cast<std::uint16_t>(b));
    const float got = half_to_float(Half{static_cast<std::uint16_t>(b)});
    if (std::isnan(want)) {
      REQUIRE(std::isnan(got));
    } else {
      REQUIRE(static_cast<double>(got) == want);
      REQUIRE(std::signbit(got) == static_cast<bool>(b & 0x8000));
    }
  }
}

TEST_CASE("fp16 encode rounds to nearest even like the reference table", "[dtype]") {
  const RoundingTable t(decode_half_exact, 0x7bff, 0x7c00);
  for (float f : probe_floats(t)) {
    const std::uint16_t want = t.round(f);
    const std::uint16_t got = float_to_half(f).bits;
    if (got != want) FAIL("x=" << f << " got " << got << " want " << want);
  }
  // Round trip of every finite encoding.
  for (std::uint32_t b = 0; b < 65536; ++b) {
    if (((b >> 10) & 0x1f) == 0x1f) continue;
    REQUIRE(float_to_half(half_to_float(Half{static_cast<std::uint16_t>(b)})).bits == b);
  }
}

TEST_CASE("bf16 encode rounds to nearest even like the reference table", "[dtype]") {
  const RoundingTable t(decode_bf16_exact, 0x7f7f, 0x7f80);
  for (float f : probe_floats(t)) {
    const std::uint16_t want = t.round(f);
    const std::uint16_t got = float_to_bfloat16(f).bits;
    if (got != want) FAIL("x=" << f << " got " << got << " want " << want);
  }
  for (std::uint32_t b = 0; b < 65536; ++b) {
    if (((b >> 7) & 0xff) == 0xff) continue;
    REQUIRE(float_to_bfloat16(bfloat16_to_float(BFloat16{static_cast<std::uint16_t>(b)})).bits == b);
  }
}

TEST_CASE("NaN, Inf and signed zero survive both conversions", "[dtype]") {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  CHECK(float_to_half(inf).bits == 0x7c00);
  CHECK(float_to_half(-inf).bits == 0xfc00);
  CHECK(std::isnan(half_to_float(float_to_half(nan))));
  CHECK(std::isnan(half_to_float(float_to_half(-nan))));
  CHECK(float_to_half(-0.f).bits == 0x8000);
  CHECK(float_to_bfloat16(inf).bits == 0x7f80);
  CHECK(float_to_bfloat16(-inf).bits == 0xff80);
  CHECK(std::isnan(bfloat16_to_float(float_to_bfloat16(nan))));
  CHECK(float_to_bfloat16(-0.f).bits == 0x8000);
  // A signalling NaN whose payload sits only in the low mantissa bits must stay NaN (not Inf).
  std::uint32_t snan_bits = 0x7f800001u;
  float snan;
  std::memcpy(&snan, &snan_bits, 4);
  CHECK(std::isnan(half_to_float(float_to_half(snan))));
  CHECK(std::isnan(bfloat16_to_float(float_to_bfloat16(snan))));
  // Payload kept: the top mantissa bits of the NaN survive fp16 -> fp32 -> fp16.
  CHECK(float_to_half(half_to_float(Half{0x7e55})).bits == 0x7e55);
}

TEST_CASE("dtype traits", "[dtype]") {
  CHECK(DTypeOf<float>::value == DType::kF32);
  CHECK(DTypeOf<Half>::value == DType::kF16);
  CHECK(DTypeOf<BFloat16>::value == DType::kBF16);
  CHECK(dtype_size(DType::kF16) == 2);
  CHECK(std::string(dtype_name(DType::kBF16)) == "bf16");
  CHECK(to_float(from_float<Half>(1.5f)) == 1.5f);
}

TEST_CASE("bulk CPU conversions equal the element conversions for every encoding", "[dtype]") {
#if defined(__F16C__)
  if (!cpu_has_f16c_avx()) {
    WARN("this CPU lacks F16C/AVX: the F16C build of this test has nothing to check");
    return;
  }
#endif
  std::vector<Half> h(65536 + 5);
  std::vector<BFloat16> b(h.size());
  for (std::size_t i = 0; i < h.size(); ++i) {
    h[i].bits = static_cast<std::uint16_t>(i);
    b[i].bits = static_cast<std::uint16_t>(i);
  }
  std::vector<float> out(h.size());
  cpu::to_float_n(h.data(), static_cast<std::int64_t>(h.size()), out.data());
  for (std::size_t i = 0; i < h.size(); ++i) REQUIRE(float_to_bits(out[i]) == float_to_bits(half_to_float(h[i])));
  cpu::to_float_n(b.data(), static_cast<std::int64_t>(b.size()), out.data());
  for (std::size_t i = 0; i < b.size(); ++i) REQUIRE(float_to_bits(out[i]) == float_to_bits(bfloat16_to_float(b[i])));
  std::vector<Half> back(h.size());
  cpu::from_float_n(out.data(), static_cast<std::int64_t>(out.size()), back.data());
  CHECK(back[0x3c00].bits == float_to_half(out[0x3c00]).bits);
}

TEST_CASE("bulk fp32 -> fp16 equals float_to_half on every rounding case", "[dtype]") {
#if defined(__F16C__)
  if (!cpu_has_f16c_avx()) {
    WARN("this CPU lacks F16C/AVX: the F16C build of this test has nothing to check");
    return;
  }
#endif
  // Every sign / exponent / top-10-mantissa prefix with low bits at the rounding boundaries
  // (exact, just below / at / above the half-way point, all ones) and one random pattern: every
  // fp16 normal, subnormal and overflow decision, both NaN kinds and Inf. Odd length: the tail.
  std::mt19937 rng(7);
  const std::uint32_t lows[] = {0u, 1u, 0xfffu, 0x1000u, 0x1001u, 0x1fffu};
  std::vector<float> x;
  x.reserve((1u << 19) * 7 + 3);
  for (std::uint32_t hi = 0; hi < (1u << 19); ++hi) {
    for (std::uint32_t lo : lows) x.push_back(bits_to_float(hi << 13 | lo));
    x.push_back(bits_to_float(hi << 13 | (rng() & 0x1fffu)));
  }
  for (int i = 0; i < 3; ++i) x.push_back(bits_to_float(rng()));
  std::vector<Half> got(x.size());
  cpu::from_float_n(x.data(), static_cast<std::int64_t>(x.size()), got.data());
  std::size_t bad = 0;
  for (std::size_t i = 0; i < x.size(); ++i)
    if (got[i].bits != float_to_half(x[i]).bits && bad++ < 5)
      UNSCOPED_INFO("x bits " << float_to_bits(x[i]) << " got " << got[i].bits << " want " << float_to_half(x[i]).bits);
  CHECK(bad == 0);
}
